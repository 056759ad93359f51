//! End-to-end: the binary's configuration: upstream server.conf as admins write it, hpb.toml, env layers, config show, sandbox mode.
