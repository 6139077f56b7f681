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
//! Host names are judged twice. When the call arrives: `localhost` and
//! `*.localhost` (RFC 6761: loopback by definition) are judged as
//! `127.0.0.1` and `::1` without asking DNS, and any other name is resolved
//! by the edge ([`CallbackPolicy::host_to_resolve`],
//! [`CallbackPolicy::check_resolved`]), so a paid run never starts for a
//! callback that can only be refused. When the event is delivered: on the
//! addresses the name resolves to then (the forwarder's resolver asks
//! [`CallbackPolicy::allows_ip`] for every address it would connect to), so
//! DNS rebinding cannot smuggle a forbidden address in. Allowed entries are
//! exact host names (their resolved addresses are then trusted) or CIDRs /
//! single addresses. Pure: no I/O here (the lookup is the caller's).

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
    /// IP literal or a `localhost` name, is allowed. Other host names pass
    /// here: see [`CallbackPolicy::host_to_resolve`]. `Err` says why, for
    /// the caller.
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
        let allowed = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => self.allows_ip(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => self.allows_ip(IpAddr::V6(v6)),
            Some(url::Host::Domain(name)) if is_localhost(name) => {
                self.allows_host(name) || LOOPBACK.iter().any(|ip| self.allows_ip(*ip))
            }
            Some(url::Host::Domain(name)) if !name.is_empty() => true,
            _ => return Err("must name a host".to_owned()),
        };
        if allowed {
            Ok(())
        } else {
            Err(REFUSED_ADDRESS.to_owned())
        }
    }

    /// The host name of an acceptable callback URL ([`check_url`] passes)
    /// that must be resolved before the call is accepted: `None` for IP
    /// literals, `localhost` names and names the operator allowed by name
    /// (nothing left to look up), and for URLs `check_url` refuses.
    ///
    /// [`check_url`]: CallbackPolicy::check_url
    pub fn host_to_resolve(&self, url: &str) -> Option<String> {
        self.check_url(url).ok()?;
        let parsed = url::Url::parse(url).ok()?;
        match parsed.host()? {
            url::Host::Domain(name) if !is_localhost(name) && !self.allows_host(name) => {
                Some(name.to_owned())
            }
            _ => None,
        }
    }

    /// Judges the addresses a callback host name resolved to when the
    /// call arrives: acceptable when at least one is allowed (delivery
    /// connects only to allowed ones). `Err` says why, for the caller.
    pub fn check_resolved(&self, addresses: &[IpAddr]) -> Result<(), String> {
        if addresses.is_empty() {
            return Err("the host name resolves to no address".to_owned());
        }
        if addresses.iter().any(|ip| self.allows_ip(*ip)) {
            Ok(())
        } else {
            Err(REFUSED_NAME.to_owned())
        }
    }
}

/// Why an IP-literal or `localhost` host is refused.
const REFUSED_ADDRESS: &str = "must not point to a loopback, link-local, private, unspecified or metadata address (not allowed by webhooks.callback_allow)";
/// Why a host name is refused on its resolved addresses.
const REFUSED_NAME: &str = "the host name resolves only to loopback, link-local, private, unspecified or metadata addresses (not allowed by webhooks.callback_allow)";

/// What `localhost` names resolve to, by definition.
const LOOPBACK: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// `localhost`, `*.localhost`, with or without the root dot (RFC 6761
/// 6.3: always loopback, never sent to DNS). The URL parser has already
/// lowercased the name.
fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .len()
            .checked_sub(".localhost".len())
            .and_then(|at| name.get(at..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
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

    #[test]
    fn localhost_names_are_loopback_without_a_lookup() {
        let strict = CallbackPolicy::new(&[], true).unwrap();
        for url in [
            "https://localhost/hook",
            "https://LOCALHOST:8443/hook",
            "https://localhost./hook",
            "https://app.localhost/hook",
            "https://a.b.localhost./hook",
        ] {
            assert!(strict.check_url(url).is_err(), "{url}");
            assert_eq!(strict.host_to_resolve(url), None, "{url}");
        }
        for url in ["https://notlocalhost/x", "https://localhost.example.com/x"] {
            assert!(strict.check_url(url).is_ok(), "{url}");
        }
        // Allowed by name, or its loopback address allowed.
        let by_name = CallbackPolicy::new(&["localhost".into()], true).unwrap();
        assert!(by_name.check_url("http://localhost:9/x").is_ok());
        let by_address = CallbackPolicy::new(&["127.0.0.1".into()], true).unwrap();
        assert!(by_address.check_url("http://localhost:9/x").is_ok());
        assert!(by_address.check_url("http://app.localhost:9/x").is_ok());
    }

    #[test]
    fn other_names_are_resolved_and_judged_on_their_addresses() {
        let strict = CallbackPolicy::strict();
        assert_eq!(
            strict
                .host_to_resolve("https://Hooks.Example.com/x")
                .as_deref(),
            Some("hooks.example.com")
        );
        for url in ["https://8.8.8.8/x", "http://hooks.example.com/x", "nope"] {
            assert_eq!(strict.host_to_resolve(url), None, "{url}");
        }
        assert!(strict.check_resolved(&[ip("93.184.215.14")]).is_ok());
        assert!(
            strict
                .check_resolved(&[ip("127.0.0.1"), ip("8.8.8.8")])
                .is_ok()
        );
        for refused in [
            vec![],
            vec![ip("127.0.0.1")],
            vec![ip("10.0.0.1"), ip("::1"), ip("169.254.169.254")],
        ] {
            assert!(strict.check_resolved(&refused).is_err(), "{refused:?}");
        }
        // A name the operator allowed is not looked up; an allowed network
        // makes its addresses acceptable.
        let allowing =
            CallbackPolicy::new(&["hooks.internal.svc".into(), "10.0.0.0/8".into()], false)
                .unwrap();
        assert_eq!(
            allowing.host_to_resolve("https://hooks.internal.svc./x"),
            None
        );
        assert!(allowing.check_resolved(&[ip("10.2.3.4")]).is_ok());
        assert!(allowing.check_resolved(&[ip("192.168.1.1")]).is_err());
    }
}
