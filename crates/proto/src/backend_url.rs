//! Canonical form of a Nextcloud backend URL, as upstream compares them: the part from
//! `ocs/v2.php/apps/spreed/` on is cut off, a trailing `/` is added, the host is lower
//! case and default ports are dropped (reference §1.4).

use url::Url;

/// Why a URL could not be used as a backend URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendUrlError {
    #[error("\"{url}\" is not an absolute URL: {reason}")]
    NotAbsolute { url: String, reason: String },
    #[error("\"{url}\" has scheme {scheme}; a Nextcloud URL must be http or https")]
    BadScheme { url: String, scheme: String },
    #[error("\"{url}\" has no host")]
    NoHost { url: String },
}

/// Canonicalise a backend URL sent by a client or configured by an admin.
pub fn canonical(raw: &str) -> Result<Url, BackendUrlError> {
    let mut s = raw.trim().to_string();
    if let Some(pos) = s.find("ocs/v2.php/apps/spreed/") {
        s.truncate(pos);
    } else if let Some(pos) = s.find("ocs/v2.php") {
        s.truncate(pos);
    }
    if !s.ends_with('/') {
        s.push('/');
    }
    let url = Url::parse(&s).map_err(|e| BackendUrlError::NotAbsolute {
        url: raw.to_string(),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(BackendUrlError::BadScheme {
                url: raw.to_string(),
                scheme: other.to_string(),
            });
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BackendUrlError::NoHost {
            url: raw.to_string(),
        });
    }
    // `url` already lower-cases the host and drops default ports; strip query/fragment.
    let mut url = url;
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// `host[:port]` of a URL, the key under which upstream groups backends.
pub fn host_key(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_the_ocs_path_and_normalises() {
        let u = canonical(
            "https://Cloud.Example.com:443/nc/ocs/v2.php/apps/spreed/api/v3/signaling/backend",
        )
        .expect("valid");
        assert_eq!(u.as_str(), "https://cloud.example.com/nc/");
        let u = canonical("http://127.0.0.1:8080").expect("valid");
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(host_key(&u), "127.0.0.1:8080");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            canonical("nope"),
            Err(BackendUrlError::NotAbsolute { .. })
        ));
        assert!(matches!(
            canonical("ftp://x/"),
            Err(BackendUrlError::BadScheme { .. })
        ));
    }
}
