//! Where webhooks may go. A merchant names a URL; the operator decides which
//! ones are acceptable: the schemes, optionally the hosts, and the networks
//! in which non-public addresses (loopback, private ranges) are allowed.
//! Link-local, cloud metadata, unspecified, multicast and broadcast
//! addresses are never allowed, whatever the configuration.
//!
//! A URL is checked when a session is created (its scheme, credentials, host
//! and, for an address literal, the address — in every spelling the URL
//! standard reads as an address, like `2130706433` or `0x7f.1`). A name is
//! checked when a delivery connects: [`VettingResolver`] resolves it, drops
//! every address that is not allowed, and the client connects only to what
//! remains — a name cannot resolve to something else between the check and
//! the connection.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use reqwest::Url;

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("must be an absolute URL")]
    NotAUrl,
    #[error("the scheme {0} is not allowed (allowed: {1})")]
    Scheme(String, String),
    #[error("must not carry credentials")]
    Credentials,
    #[error("the host is not among the allowed webhook hosts")]
    Host,
    #[error("{0} addresses are never allowed")]
    Forbidden(&'static str),
    #[error("{0} addresses are not among the allowed webhook networks")]
    NotAllowed(&'static str),
    #[error("the name resolves to no address")]
    Unresolved,
}

/// An address range, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, normalized(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text}: expected an address/prefix, e.g. 10.0.0.0/8"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text}: the prefix must be 0 to {max}"))?
        };
        Ok(Network {
            address: normalized(address),
            prefix,
        })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A host pattern: `hooks.example.com`, or `*.example.com` for any name
/// below `example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(String);

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|label| label.ends_with('.') && label.len() > 1),
            None => self.0 == host,
        }
    }
}

impl FromStr for HostPattern {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let pattern = text.trim_end_matches('.').to_ascii_lowercase();
        let name = pattern.strip_prefix("*.").unwrap_or(&pattern);
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if ok {
            Ok(HostPattern(pattern))
        } else {
            Err(format!(
                "{text}: expected a host name or *.domain (e.g. *.example.com)"
            ))
        }
    }
}

/// The operator's rules for webhook destinations.
#[derive(Debug, Clone)]
pub struct Destinations {
    schemes: Vec<String>,
    /// Empty: any host.
    hosts: Vec<HostPattern>,
    /// Where loopback and private addresses are allowed.
    networks: Vec<Network>,
}

impl Default for Destinations {
    /// HTTPS to public addresses only.
    fn default() -> Self {
        Destinations::new(vec!["https".into()], Vec::new(), Vec::new())
    }
}

impl Destinations {
    pub fn new(schemes: Vec<String>, hosts: Vec<HostPattern>, networks: Vec<Network>) -> Self {
        Destinations {
            schemes: schemes
                .into_iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            hosts,
            networks,
        }
    }

    pub fn networks(&self) -> &[Network] {
        &self.networks
    }

    pub fn schemes(&self) -> &[String] {
        &self.schemes
    }

    /// Checks a URL without resolving it: the scheme, credentials, the host
    /// patterns, an address literal's address, and names that always mean
    /// this machine or a cloud's metadata service.
    pub fn check_url(&self, url: &str) -> Result<Url, Refusal> {
        let parsed = Url::parse(url).map_err(|_| Refusal::NotAUrl)?;
        if !self.schemes.iter().any(|s| s == parsed.scheme()) {
            return Err(Refusal::Scheme(
                parsed.scheme().to_owned(),
                self.schemes.join(", "),
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Refusal::Credentials);
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => {
                self.check_address(IpAddr::V4(ip))?;
                ip.to_string()
            }
            Some(url::Host::Ipv6(ip)) => {
                self.check_address(IpAddr::V6(ip))?;
                format!("[{ip}]")
            }
            None => return Err(Refusal::NotAUrl),
        };
        if !self.hosts.is_empty() && !self.hosts.iter().any(|p| p.matches(&host)) {
            return Err(Refusal::Host);
        }
        if is_metadata_name(&host) {
            return Err(Refusal::Forbidden("cloud metadata"));
        }
        if host == "localhost" || host.ends_with(".localhost") {
            // What it resolves to decides, like any name; refused now when
            // loopback is not allowed at all, so the mistake shows early.
            let loopback = [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            if !loopback
                .iter()
                .any(|ip| self.networks.iter().any(|n| n.contains(*ip)))
            {
                return Err(Refusal::NotAllowed("loopback"));
            }
        }
        Ok(parsed)
    }

    /// Checks one address a delivery would connect to.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Refusal> {
        match classify(normalized(ip)) {
            Class::Public => Ok(()),
            Class::Forbidden(kind) => Err(Refusal::Forbidden(kind)),
            Class::Local(kind) => {
                if self.networks.iter().any(|n| n.contains(ip)) {
                    Ok(())
                } else {
                    Err(Refusal::NotAllowed(kind))
                }
            }
        }
    }
}

enum Class {
    Public,
    /// Allowed only inside a configured network.
    Local(&'static str),
    /// Never allowed.
    Forbidden(&'static str),
}

/// IPv4 addresses written as IPv6 (mapped `::ffff:a.b.c.d`, compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are the IPv4 address they carry.
fn normalized(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if v6.is_loopback() || v6.is_unspecified() {
        return ip;
    }
    let s = v6.segments();
    let embedded = Ipv4Addr::from(u32::try_from(u128::from(v6) & 0xffff_ffff).unwrap_or(0));
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => IpAddr::V4(embedded),
        _ => ip,
    }
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            if a == 0 {
                Class::Forbidden("unspecified")
            } else if a == 169 && b == 254 {
                Class::Forbidden("link-local (cloud metadata)")
            } else if [a, b, c, d] == [100, 100, 100, 200] || [a, b, c, d] == [192, 0, 0, 192] {
                Class::Forbidden("cloud metadata")
            } else if a >= 224 {
                Class::Forbidden("multicast, broadcast or reserved")
            } else if a == 127 {
                Class::Local("loopback")
            } else if a == 10
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && (c == 0 || c == 2))
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
            {
                Class::Local("private")
            } else {
                Class::Public
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_unspecified() {
                Class::Forbidden("unspecified")
            } else if v6.is_loopback() {
                Class::Local("loopback")
            } else if first & 0xffc0 == 0xfe80 {
                Class::Forbidden("link-local (cloud metadata)")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Class::Forbidden("cloud metadata")
            } else if first & 0xff00 == 0xff00 {
                Class::Forbidden("multicast, broadcast or reserved")
            } else if first & 0xfe00 == 0xfc00 || first == 0x2001 && v6.segments()[1] == 0xdb8 {
                Class::Local("private")
            } else {
                Class::Public
            }
        }
    }
}

/// Why a merchant may not set a header on its webhooks, if it may not:
/// hop-by-hop headers, the ones that frame or route the request, and ours.
pub fn header_refusal(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    let hop_by_hop = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    ];
    if hop_by_hop.contains(&name.as_str()) {
        Some("is a hop-by-hop header")
    } else if [
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
    ]
    .contains(&name.as_str())
    {
        Some("frames or routes the request and is set by the service")
    } else if name.starts_with("webhook-") || name.starts_with("payment-orchestrator-") {
        Some("is a signature header set by the service")
    } else {
        None
    }
}

/// Names of cloud metadata services.
fn is_metadata_name(host: &str) -> bool {
    matches!(
        host,
        "metadata" | "metadata.google.internal" | "metadata.goog" | "instance-data"
    ) || host.starts_with("instance-data.")
}

/// A DNS resolver for the webhook client: resolves with the system
/// resolver, keeps only the allowed addresses, and fails (with the
/// [`Refusal`]) when none is left. The client connects to what it answers.
#[derive(Debug, Clone)]
pub struct VettingResolver {
    pub destinations: Destinations,
}

impl reqwest::dns::Resolve for VettingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.destinations.clone();
        Box::pin(async move {
            let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
            if is_metadata_name(&host) {
                return Err(Box::new(Refusal::Forbidden("cloud metadata")) as _);
            }
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = Refusal::Unresolved;
            let mut allowed = Vec::new();
            for address in resolved {
                match destinations.check_address(address.ip()) {
                    Ok(()) => allowed.push(address),
                    Err(reason) => refusal = reason,
                }
            }
            if allowed.is_empty() {
                return Err(Box::new(refusal) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_allowed() -> Destinations {
        Destinations::new(
            vec!["https".into(), "http".into()],
            Vec::new(),
            vec!["127.0.0.0/8".parse().unwrap()],
        )
    }

    /// Which of `urls` `destinations` takes (`true`) or refuses.
    fn assert_takes(destinations: &Destinations, urls: &[(&str, bool)]) {
        for (url, taken) in urls {
            assert_eq!(destinations.check_url(url).is_ok(), *taken, "{url}");
        }
    }

    #[test]
    fn every_spelling_of_a_refused_address_is_refused() {
        let strict = Destinations::default();
        for url in [
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:7f00:1]/",
            "https://[64:ff9b::7f00:1]/",
            "https://0.0.0.0/",
            "https://[::]/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::ffff:169.254.169.254]/",
            "https://[fe80::1]/",
            "https://[fd00:ec2::254]/",
            "https://10.0.0.1/",
            "https://192.168.1.1/",
            "https://172.16.0.1/",
            "https://100.64.0.1/",
            "https://224.0.0.1/",
            "https://localhost/",
            "https://LOCALHOST./",
            "https://a.localhost/",
            "https://metadata.google.internal/",
            "https://user:pass@example.com/",
            "http://example.com/",
            "ftp://example.com/",
            "not a url",
        ] {
            assert!(strict.check_url(url).is_err(), "{url} must be refused");
        }
        assert!(strict.check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(strict.check_url("https://93.184.216.34/").is_ok());
    }

    #[test]
    fn allowed_networks_open_loopback_and_private_but_never_metadata() {
        assert_takes(
            &local_allowed(),
            &[
                ("http://127.0.0.1:8080/", true),
                ("http://localhost:8080/", true),
                ("http://10.0.0.1/", false),
            ],
        );
        let everything = Destinations::new(
            vec!["https".into()],
            Vec::new(),
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        );
        assert_takes(
            &everything,
            &[
                ("https://169.254.169.254/", false),
                ("https://[fe80::1]/", false),
                ("https://0.0.0.0/", false),
                ("https://10.0.0.1/", true),
            ],
        );
    }

    #[test]
    fn host_patterns_restrict_names() {
        let hosts = Destinations::new(
            vec!["https".into()],
            vec![
                "*.example.com".parse().unwrap(),
                "hooks.acme.test".parse().unwrap(),
            ],
            Vec::new(),
        );
        assert_takes(
            &hosts,
            &[
                ("https://a.example.com/", true),
                ("https://a.b.example.com/", true),
                ("https://example.com/", false),
                ("https://evilexample.com/", false),
                ("https://hooks.acme.test./", true),
                ("https://other.test/", false),
            ],
        );
    }

    #[test]
    fn networks_parse_and_match() {
        let net: Network = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("ten/8".parse::<Network>().is_err());
        let one: Network = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
    }
}
