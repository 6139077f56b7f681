//! Where the gateway may send callbacks: the `callback_url` policy.
//!
//! A caller's `callback_url` makes the gateway (or, for Fetch Hive, the
//! vendor) POST signed events to an address the caller chose. Left open,
//! that is a request forgery primitive: loopback admin ports, the
//! gateway's own listeners, cluster-internal services, the cloud metadata
//! service. [`CallbackPolicy`] refuses, unless the operator allows them:
//! - `http://` (only `https://` is accepted by default);
//! - hosts that are IP literals in loopback, link-local (with the metadata
//!   address 169.254.169.254), private (RFC 1918, ULA `fc00::/7` with
//!   `fd00:ec2::254`), unspecified, CGNAT `100.64.0.0/10`, multicast,
//!   broadcast or reserved ranges (IPv4-mapped IPv6 addresses are judged
//!   as their IPv4 address).
//!
//! Host names are judged when the call is delivered, on the addresses they
//! resolve to (the forwarder's resolver asks [`CallbackPolicy::allows_ip`]
//! for every address it would connect to), so DNS rebinding cannot
//! smuggle a forbidden address in. Allowed entries are exact host names
//! (their resolved addresses are then trusted) or CIDRs / single addresses.
//! Pure: no I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest callback URL accepted.
pub const MAX_CALLBACK_URL_BYTES: usize = 2048;

/// One allowed network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// `10.0.0.0/8`, `fd00::/8`, or a single address.
    fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    let shift = u32::from(width.saturating_sub(prefix));
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    prefix_eq(
        u128::from(u32::from_be_bytes(net)),
        u128::from(ip.to_bits()),
        32,
        prefix,
    )
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u8) -> bool {
    prefix_eq(net, ip.to_bits(), 128, prefix)
}

/// True for addresses no callback goes to unless allowed (see the module
/// docs for the list).
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            v4.is_unspecified()
                || in_v4(v4, [0, 0, 0, 0], 8)
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || in_v4(v4, [100, 64, 0, 0], 10)
                || in_v4(v4, [192, 0, 0, 0], 24)
                || v4.is_multicast()
                || in_v4(v4, [240, 0, 0, 0], 4)
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || in_v6(v6, 0xfe80 << 112, 10)
                || in_v6(v6, 0xfc00 << 112, 7)
                || v6.is_multicast()
                // NAT64 (64:ff9b::/96) reaches any IPv4 address: judged as it.
                || (in_v6(v6, 0x0064_ff9b << 96, 96)
                    && is_forbidden_ip(IpAddr::V4(Ipv4Addr::from_bits(
                        (v6.to_bits() & 0xffff_ffff) as u32,
                    ))))
        }
    }
}

/// The operator's callback destination policy (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallbackPolicy {
    hosts: Vec<String>,
    networks: Vec<Network>,
    allow_http: bool,
}

/// A `callback_allow` entry that is neither a CIDR, an address nor a host
/// name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} is neither a host name, an IP address nor a CIDR (like 10.0.0.0/8)")]
pub struct InvalidAllowEntry {
    /// The entry as configured.
    pub entry: String,
}

impl CallbackPolicy {
    /// The default: https only, no forbidden address allowed.
    pub fn strict() -> Self {
        Self::default()
    }

    /// A policy allowing `allow` (host names, addresses, CIDRs) and, with
    /// `allow_http`, plain `http://` URLs.
    pub fn new(allow: &[String], allow_http: bool) -> Result<Self, InvalidAllowEntry> {
        let mut policy = Self {
            allow_http,
            ..Self::default()
        };
        for entry in allow {
            let trimmed = entry.trim();
            let unbracketed = trimmed.trim_start_matches('[').trim_end_matches(']');
            if let Some(network) = Network::parse(unbracketed) {
                policy.networks.push(network);
            } else if is_host_name(trimmed) {
                policy.hosts.push(trimmed.to_ascii_lowercase());
            } else {
                return Err(InvalidAllowEntry {
                    entry: entry.clone(),
                });
            }
        }
        Ok(policy)
    }

    /// True when `host` (a name, as in the URL) is allowed by name: every
    /// address it resolves to is then trusted.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// True when a callback may connect to `ip`.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        !is_forbidden_ip(ip) || self.networks.iter().any(|net| net.contains(ip))
    }

    /// Checks a caller's callback URL when the call arrives: an absolute
    /// `https://` URL (or `http://` when allowed) whose host, when it is an
    /// IP literal, is allowed. Host names pass here and are judged on
    /// their resolved addresses at delivery. `Err` says why, for the
    /// caller.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        if url.len() > MAX_CALLBACK_URL_BYTES {
            return Err(format!("at most {MAX_CALLBACK_URL_BYTES} bytes"));
        }
        let parsed =
            url::Url::parse(url).map_err(|_| "must be an absolute https:// URL".to_owned())?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(
                    "must use https:// (plain http:// callbacks are not allowed by webhooks.callback_allow_http)"
                        .to_owned(),
                );
            }
            _ => return Err("must be an absolute https:// URL".to_owned()),
        }
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(name)) if !name.is_empty() => return Ok(()),
            _ => return Err("must name a host".to_owned()),
        };
        if self.allows_ip(ip) {
            Ok(())
        } else {
            Err(
                "must not point to a loopback, link-local, private, unspecified or metadata address (not allowed by webhooks.callback_allow)"
                    .to_owned(),
            )
        }
    }
}

/// A DNS host name: labels of letters, digits, `-` and `_`, dot-separated.
fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forbidden_ranges() {
        for text in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "ff02::1",
        ] {
            assert!(is_forbidden_ip(ip(text)), "{text}");
        }
        for text in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(!is_forbidden_ip(ip(text)), "{text}");
        }
    }

    #[test]
    fn invoke_time_checks() {
        let strict = CallbackPolicy::strict();
        assert!(strict.check_url("https://hooks.example.com/x").is_ok());
        assert!(strict.check_url("https://8.8.8.8/x").is_ok());
        for url in [
            "http://hooks.example.com/x",
            "ftp://x/",
            "https://127.0.0.1:8080/",
            "https://[::1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.7/",
            "https://[fd00:ec2::254]/",
            "https://[::ffff:7f00:1]/",
            "https://0.0.0.0/",
            "https://100.64.1.1/",
            "not a url",
        ] {
            assert!(strict.check_url(url).is_err(), "{url}");
        }
        assert!(
            strict
                .check_url(&format!("https://a.example/{}", "x".repeat(3000)))
                .is_err()
        );
    }

    #[test]
    fn operators_allow_hosts_networks_and_http() {
        let policy = CallbackPolicy::new(
            &[
                "hooks.internal.svc".into(),
                "10.0.0.0/8".into(),
                "127.0.0.1".into(),
                "[fd12::1]".into(),
            ],
            true,
        )
        .unwrap();
        assert!(policy.check_url("http://10.9.9.9:80/x").is_ok());
        assert!(policy.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(policy.check_url("https://[fd12::1]/x").is_ok());
        assert!(policy.check_url("https://127.0.0.2/").is_err());
        assert!(policy.check_url("https://169.254.169.254/").is_err());
        assert!(policy.allows_host("HOOKS.internal.svc."));
        assert!(!policy.allows_host("other.svc"));
        assert!(policy.allows_ip(ip("10.200.0.1")));
        assert!(policy.allows_ip(ip("::ffff:10.1.1.1")));
        assert!(!policy.allows_ip(ip("192.168.0.1")));
        for bad in ["10.0.0.0/33", "http://x", "a b", ""] {
            assert!(CallbackPolicy::new(&[bad.into()], false).is_err(), "{bad}");
        }
    }
}
