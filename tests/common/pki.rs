//! A test PKI: a CA made by the test (rcgen) and the server and client
//! certificates it issues, PEM.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType, SerialNumber,
};

/// A CA made by the test.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM (what clients and servers trust).
    pub pem: String,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A certificate for `sans` and `usage`, valid 2024–2099, or expired in
    /// 2021 when `expired`.
    pub fn issue(
        &self,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        serial: u64,
        expired: bool,
    ) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![usage];
        (params.not_before, params.not_after) = if expired {
            (
                rcgen::date_time_ymd(2020, 1, 1),
                rcgen::date_time_ymd(2021, 1, 1),
            )
        } else {
            (
                rcgen::date_time_ymd(2024, 1, 1),
                rcgen::date_time_ymd(2099, 1, 1),
            )
        };
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        Issued {
            cert: params.signed_by(&key, &issuer).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `localhost`.
    pub fn server(&self, serial: u64) -> Issued {
        self.issue(
            vec![SanType::DnsName("localhost".try_into().unwrap())],
            ExtendedKeyUsagePurpose::ServerAuth,
            serial,
            false,
        )
    }

    /// A client certificate whose only SAN is the URI `uri`.
    pub fn client_uri(&self, uri: &str) -> Issued {
        self.issue(
            vec![SanType::URI(uri.try_into().unwrap())],
            ExtendedKeyUsagePurpose::ClientAuth,
            7,
            false,
        )
    }

    /// A client certificate whose only SAN is the DNS name `name`.
    pub fn client_dns(&self, name: &str) -> Issued {
        self.issue(
            vec![SanType::DnsName(name.try_into().unwrap())],
            ExtendedKeyUsagePurpose::ClientAuth,
            8,
            false,
        )
    }
}
