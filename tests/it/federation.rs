//! End-to-end: federated participants joining a room hosted on another hpb.
