//! `[server.cors]`: which browser origins may call the gRPC port (gRPC-Web).

use super::*;

/// Most entries in `allowed_origins`.
const MAX_ORIGINS: usize = 100;

/// `[server.cors]`. Off by default: with no `allowed_origins` no response
/// carries a CORS header and browsers on other origins cannot call.
///
/// Origins are exact (`https://app.example.com`, `http://localhost:5173`):
/// no `*` and no patterns. flowgate uses no cookies: a browser caller sends
/// its key in the `authorization` header, which every allowed origin may
/// send; credentialed requests (`Access-Control-Allow-Credentials`) are not
/// offered.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call, each `scheme://host[:port]` exactly as a
    /// browser sends it in `Origin`. Default none.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer. Default `10m`.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsConfig {
    /// Whether any origin is allowed (CORS is on).
    pub fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// Problems types alone cannot catch, each with its path.
    pub(super) fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.allowed_origins.len() > MAX_ORIGINS {
            issues.push(ConfigIssue {
                path: "server.cors.allowed_origins".to_owned(),
                message: format!("at most {MAX_ORIGINS} origins"),
            });
        }
        for (index, origin) in self.allowed_origins.iter().enumerate() {
            if let Err(message) = check_origin(origin) {
                issues.push(ConfigIssue {
                    path: format!("server.cors.allowed_origins[{index}]"),
                    message,
                });
            }
        }
        issues
    }
}

/// An origin as browsers send it: `http(s)://host[:port]`, lower case, no
/// default port, no path.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" || origin.contains('*') {
        return Err("no wildcards: list each origin (https://app.example.com)".into());
    }
    let url = url::Url::parse(origin).map_err(|err| format!("not an origin: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// origin".into());
    }
    let canonical = url.origin().ascii_serialization();
    if canonical != origin {
        return Err(format!(
            "must be written as browsers send it: {canonical:?} (no path, no trailing \
             slash, no default port, lower case)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::tests::{BASE, problems};

    #[test]
    fn off_by_default_and_read_when_set() {
        let config = Config::parse(BASE, Vec::new()).unwrap();
        assert!(!config.server.cors.enabled());
        assert_eq!(config.server.cors.max_age, Duration::from_secs(600));
        let config = Config::parse(
            &format!(
                "{BASE}[server.cors]\nallowed_origins = [\"https://app.example.com\", \
                 \"http://localhost:5173\"]\nmax_age = \"1h\"\n"
            ),
            Vec::new(),
        )
        .unwrap();
        assert!(config.server.cors.enabled());
        assert_eq!(config.server.cors.allowed_origins.len(), 2);
        assert_eq!(config.server.cors.max_age, Duration::from_secs(3600));
    }

    #[test]
    fn only_exact_origins_are_accepted() {
        let found = problems(
            "[server.cors]\nallowed_origins = [\"*\", \"https://app.example.com/\", \
             \"https://App.example.com\", \"https://a.example.com:443\", \"ftp://x.example\", \
             \"https://*.example.com\", \"app.example.com\", \"https://ok.example.com\"]\n\
             max_age = \"48h\"\n",
            &[],
        );
        let paths: Vec<_> = found
            .iter()
            .map(|line| line.split(": ").next().unwrap_or_default())
            .collect();
        assert_eq!(
            paths,
            vec![
                "server.cors.allowed_origins[0]",
                "server.cors.allowed_origins[1]",
                "server.cors.allowed_origins[2]",
                "server.cors.allowed_origins[3]",
                "server.cors.allowed_origins[4]",
                "server.cors.allowed_origins[5]",
                "server.cors.allowed_origins[6]",
                "server.cors.max_age",
            ],
            "{found:?}"
        );
        assert!(
            found[1].contains("\"https://app.example.com\""),
            "{found:?}"
        );
    }
}
