//! `serve --web-config FILE`: the web configuration file of the Prometheus
//! exporter-toolkit, the one node_exporter reads with `--web.config.file`
//! (`tls_server_config`, `http_server_config`, `basic_auth_users`). It is
//! read and checked whole when `serve` starts, before anything is attached:
//! every refusal names the file and the field. What it owns: the rustls
//! server configuration (certificate and key, read again when renewed;
//! client certificates checked against the client CA and, if given, the
//! allowed names; versions, suites, curves) and the basic-auth check
//! (bcrypt, with successful verifications remembered so a scrape every 15 s
//! does not pay a bcrypt).

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{ring as provider, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
    },
    sign::CertifiedKey,
    CertificateError, DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;

/// The file as written: unknown fields are refused, as exporter-toolkit
/// does (a misspelt `cert_fiel` must not silently serve plain HTTP).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// netprobe speaks HTTP/1.1 only; Prometheus falls back to it.
    #[serde(rename = "http2")]
    _http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The response headers `http_server_config.headers` may set, as in
/// exporter-toolkit, with the values it allows (None: any).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

/// A checked web configuration (the default: plain HTTP, no auth).
#[derive(Default)]
pub struct WebConfig {
    /// TLS on every connection, if `tls_server_config` is given.
    pub tls: Option<Arc<ServerConfig>>,
    /// Basic auth, if `basic_auth_users` is not empty.
    pub auth: Option<BasicAuth>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
}

impl WebConfig {
    /// Reads and checks `path`; relative file names in it are taken from
    /// the file's directory (as exporter-toolkit does).
    pub fn load(path: &Path) -> Result<WebConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new("."))).with_context(|| format!("{}", path.display()))
    }

    fn parse(text: &str, dir: &Path) -> Result<WebConfig> {
        // An empty file (or one of comments) is a valid, empty configuration.
        let file = serde_norway::from_str::<Option<FileConfig>>(text)?.unwrap_or_default();
        if file.rate_limit.is_some() {
            bail!("rate_limit: not supported by netprobe (each scrape reads the kernel's maps once)");
        }
        let tls = file.tls_server_config.map(|t| tls_config(&t, dir)).transpose()?;
        let auth = (!file.basic_auth_users.is_empty()).then(|| BasicAuth::new(file.basic_auth_users)).transpose()?;
        let headers = file.http_server_config.map(|h| checked_headers(h.headers)).transpose()?.unwrap_or_default();
        Ok(WebConfig { tls: tls.map(Arc::new), auth, headers })
    }
}

fn checked_headers(headers: BTreeMap<String, String>) -> Result<Vec<(String, String)>> {
    headers
        .into_iter()
        .map(|(k, v)| {
            let Some((_, allowed)) = HEADERS.iter().find(|(name, _)| *name == k) else {
                bail!(
                    "http_server_config.headers.{k}: not a header netprobe sets (one of {})",
                    HEADERS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                );
            };
            if let Some(values) = allowed.filter(|vals| !vals.contains(&v.to_ascii_lowercase().as_str())) {
                bail!("http_server_config.headers.{k}: {v:?} is not one of {}", values.join(", "));
            }
            if v.contains(['\r', '\n']) {
                bail!("http_server_config.headers.{k}: a header value has no line breaks");
            }
            Ok((k, v))
        })
        .collect()
}

/// A PEM item, from a file (`*_file`) or inline, with the field it came
/// from.
fn pem_source(field: &str, inline: Option<&str>, file: Option<&Path>, dir: &Path) -> Result<Option<(String, Vec<u8>)>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("tls_server_config: give {field} or {field}_file, not both"),
        (Some(text), None) => Ok(Some((field.to_owned(), text.as_bytes().to_vec()))),
        (None, Some(f)) => {
            let path = dir.join(f);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("tls_server_config.{field}_file: cannot read {}", path.display()))?;
            Ok(Some((format!("{field}_file"), bytes)))
        }
        (None, None) => Ok(None),
    }
}

fn certificates(field: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("tls_server_config.{field}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        bail!("tls_server_config.{field}: no PEM certificate in it");
    }
    Ok(certs)
}

/// `TLS12` -> 2, `TLS13` -> 3.
fn tls_version(field: &str, v: Option<&str>, default: u8) -> Result<u8> {
    match v {
        None => Ok(default),
        Some("TLS12") => Ok(2),
        Some("TLS13") => Ok(3),
        Some(v @ ("TLS10" | "TLS11")) => bail!("tls_server_config.{field}: {v} is not supported (TLS12 or TLS13)"),
        Some(v) => bail!("tls_server_config.{field}: unknown TLS version {v:?} (TLS12 or TLS13)"),
    }
}

fn tls_config(t: &TlsFile, dir: &Path) -> Result<ServerConfig> {
    let required = client_auth(t)?;
    let sans = allowed_sans(t.client_allowed_sans.as_deref(), required)?;
    let min = tls_version("min_version", t.min_version.as_deref(), 2)?;
    let max = tls_version("max_version", t.max_version.as_deref(), 3)?;
    if min > max {
        bail!("tls_server_config: min_version is above max_version");
    }
    let versions: Vec<&'static SupportedProtocolVersion> = [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect();

    let client_ca = pem_source("client_ca", t.client_ca.as_deref(), t.client_ca_file.as_deref(), dir)?;
    let provider = Arc::new(crypto_provider(t)?);
    let identity = Identity::load(t, dir, &provider)?;
    let mut verifier = client_verifier(required, client_ca, &provider)?;
    if let Some(names) = sans {
        verifier = Arc::new(AllowedSans { inner: verifier, names });
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .context("tls_server_config: min_version/max_version")?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(identity));
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The server's certificate and key. Files are read again at a handshake
/// when one of them changed, so a renewed certificate is served without a
/// restart (exporter-toolkit reads them at every connection); a renewal
/// that does not load (a key not written yet) keeps the previous identity
/// and is said on stderr.
#[derive(Debug)]
struct Identity {
    source: IdentitySource,
    /// The files' modification times when the identity was read, and it.
    current: Mutex<(Vec<Option<SystemTime>>, Arc<CertifiedKey>)>,
}

/// Where the certificate and key come from (file names already joined to
/// the configuration file's directory).
#[derive(Debug)]
struct IdentitySource {
    cert: Option<String>,
    key: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    provider: Arc<CryptoProvider>,
}

impl Identity {
    fn load(t: &TlsFile, dir: &Path, provider: &Arc<CryptoProvider>) -> Result<Identity> {
        let source = IdentitySource {
            cert: t.cert.clone(),
            key: t.key.clone(),
            cert_file: t.cert_file.as_ref().map(|f| dir.join(f)),
            key_file: t.key_file.as_ref().map(|f| dir.join(f)),
            provider: Arc::clone(provider),
        };
        // The times first: a change while reading is read at the next handshake.
        let stamps = source.stamps();
        let current = Mutex::new((stamps, Arc::new(source.read()?)));
        Ok(Identity { source, current })
    }
}

impl IdentitySource {
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        [&self.cert_file, &self.key_file]
            .iter()
            .map(|f| f.as_ref().and_then(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()))
            .collect()
    }

    fn read(&self) -> Result<CertifiedKey> {
        let no_dir = Path::new("");
        let (cert_field, cert_pem) = pem_source("cert", self.cert.as_deref(), self.cert_file.as_deref(), no_dir)?
            .context("tls_server_config: missing one of cert or cert_file")?;
        let (key_field, key_pem) = pem_source("key", self.key.as_deref(), self.key_file.as_deref(), no_dir)?
            .context("tls_server_config: missing one of key or key_file")?;
        let chain = certificates(&cert_field, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| anyhow!("tls_server_config.{key_field}: no PEM private key in it ({e})"))?;
        CertifiedKey::from_der(chain, key, &self.provider)
            .map_err(|e| anyhow!("tls_server_config: the certificate and key do not make a server identity: {e}"))
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = self.source.stamps();
        if stamps != current.0 {
            match self.source.read() {
                Ok(renewed) => {
                    *current = (stamps, Arc::new(renewed));
                    crate::say!("netprobe: serving the renewed TLS certificate");
                }
                Err(e) => crate::say!("netprobe: keeping the previous TLS certificate: {e:#}"),
            }
        }
        Some(Arc::clone(&current.1))
    }
}

/// TLS 1.3 suites by Go's names: exporter-toolkit accepts them in
/// `cipher_suites`, and Go (like rustls) does not let them be chosen.
const TLS13_SUITES: &[&str] = &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

/// `curve_preferences`: Go's names -> the key exchange groups.
const CURVES: &[(&str, NamedGroup)] = &[
    ("CurveP256", NamedGroup::secp256r1),
    ("CurveP384", NamedGroup::secp384r1),
    ("CurveP521", NamedGroup::secp521r1),
    ("X25519", NamedGroup::X25519),
];

/// ring's provider with `cipher_suites` (the TLS 1.2 suites, in the
/// order given, as Go does) and `curve_preferences` applied. An empty
/// list, like an absent one, keeps the defaults.
fn crypto_provider(t: &TlsFile) -> Result<CryptoProvider> {
    let mut p = provider::default_provider();
    if let Some(names) = t.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
        let offered = |s: &SupportedCipherSuite| s.version() == &rustls::version::TLS12;
        let mut chosen = Vec::new();
        for name in names.iter().filter(|n| !TLS13_SUITES.contains(&n.as_str())) {
            let Some(suite) = p.cipher_suites.iter().find(|s| offered(s) && format!("{:?}", s.suite()) == *name) else {
                let known: Vec<String> =
                    p.cipher_suites.iter().filter(|s| offered(s)).map(|s| format!("{:?}", s.suite())).collect();
                bail!("tls_server_config.cipher_suites: {name} is not offered (TLS 1.2: {})", known.join(", "));
            };
            chosen.push(*suite);
        }
        p.cipher_suites.retain(|s| !offered(s));
        p.cipher_suites.extend(chosen);
    }
    if let Some(names) = t.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
        let mut groups = Vec::new();
        for name in names {
            let Some((_, group)) = CURVES.iter().find(|(n, _)| n == name) else {
                bail!(
                    "tls_server_config.curve_preferences: unknown curve {name} ({})",
                    CURVES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                );
            };
            let Some(kx) = p.kx_groups.iter().find(|k| k.name() == *group) else {
                bail!("tls_server_config.curve_preferences: {name} is not offered (ring has no {group:?})");
            };
            groups.push(*kx);
        }
        p.kx_groups = groups;
    }
    Ok(p)
}

/// `client_auth_type`: None (no client certificate asked for) or whether
/// one is required. The two values that accept a certificate without
/// verifying it are refused: exporter-toolkit's own documentation calls
/// every value but RequireAndVerifyClientCert insecure.
fn client_auth(t: &TlsFile) -> Result<Option<bool>> {
    let has_ca = t.client_ca.is_some() || t.client_ca_file.is_some();
    let required = match t.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" if has_ca => {
            bail!("tls_server_config: client_ca_file is given but client_auth_type is NoClientCert")
        }
        "NoClientCert" => return Ok(None),
        "VerifyClientCertIfGiven" => false,
        "RequireAndVerifyClientCert" => true,
        v @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert") => bail!(
            "tls_server_config.client_auth_type: {v} accepts client certificates without verifying them; \
             netprobe supports NoClientCert, VerifyClientCertIfGiven and RequireAndVerifyClientCert"
        ),
        v => bail!(
            "tls_server_config.client_auth_type: unknown value {v:?} (NoClientCert, RequestClientCert, \
             RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
        ),
    };
    if !has_ca {
        bail!("tls_server_config: client_auth_type verifies client certificates: client_ca_file is missing");
    }
    Ok(Some(required))
}

/// `client_allowed_sans` as names to match: DNS names and IP addresses.
/// Like exporter-toolkit, only where a verified certificate is required.
fn allowed_sans(sans: Option<&[String]>, required: Option<bool>) -> Result<Option<Vec<ServerName<'static>>>> {
    let Some(sans) = sans else { return Ok(None) };
    if required != Some(true) {
        bail!("tls_server_config.client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert");
    }
    if sans.is_empty() {
        bail!("tls_server_config.client_allowed_sans: an empty list would refuse every client");
    }
    sans.iter()
        .map(|san| {
            ServerName::try_from(san.clone()).map_err(|_| {
                anyhow!("tls_server_config.client_allowed_sans: {san:?} is not a DNS name or IP address (e-mail and URI names are not supported)")
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `client_allowed_sans`: after the CA's check, the client certificate
/// must name one of these (a DNS name or IP address subject alternative
/// name; a wildcard in the certificate matches as in server names).
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.names.iter().any(|n| cert.verify_is_valid_for_subject_name(n).is_ok()) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client certificate check: against the client CA, required or not.
fn client_verifier(
    required: Option<bool>,
    client_ca: Option<(String, Vec<u8>)>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let (Some(required), Some((field, ca))) = (required, client_ca) else {
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certificates(&field, &ca)?);
    if roots.is_empty() {
        bail!("tls_server_config.{field}: none of its {ignored} certificates is a usable CA");
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = if required { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|e| anyhow!("tls_server_config.{field}: {e}"))
}

/// `basic_auth_users`: user -> bcrypt hash. bcrypt is slow by design, so a
/// verified (user, password) is remembered as a keyed hash (HMAC-SHA256
/// under a key drawn at start: the passwords themselves are not kept).
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    key: ring::hmac::Key,
    verified: Mutex<HashSet<Vec<u8>>>,
}

/// Verified pairs remembered at most (then forgotten all at once).
const VERIFIED_MAX: usize = 256;

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth> {
        for (user, hash) in &users {
            if user.contains(':') {
                bail!("basic_auth_users.{user}: a user name has no ':' in basic auth");
            }
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                anyhow!("basic_auth_users.{user}: not a bcrypt hash ({e}); make one with htpasswd -nBC 10 \"\"")
            })?;
        }
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| anyhow!("no random numbers for the basic-auth cache key"))?;
        Ok(BasicAuth { users, key, verified: Mutex::new(HashSet::new()) })
    }

    /// Whether the `Authorization` header's value names a user with the
    /// right password.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else { return false };
        let mut msg = Vec::with_capacity(user.len() + password.len() + 8);
        msg.extend_from_slice(&(user.len() as u64).to_le_bytes());
        msg.extend_from_slice(user.as_bytes());
        msg.extend_from_slice(&password);
        let tag = ring::hmac::sign(&self.key, &msg).as_ref().to_vec();
        if self.verified.lock().unwrap_or_else(|e| e.into_inner()).contains(&tag) {
            return true;
        }
        let Some(hash) = self.users.get(&user) else {
            // As slow as a known user's, so the answer does not tell
            // which users exist.
            let any = self.users.values().next().map_or("", String::as_str);
            let _ = bcrypt::verify(&password, any);
            return false;
        };
        if !bcrypt::verify(&password, hash).unwrap_or(false) {
            return false;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(tag);
        true
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn basic_credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((String::from_utf8(decoded[..colon].to_vec()).ok()?, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own per test, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("netprobe-webconfig-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// PEM framing around bytes that are no real certificate: enough for
    /// the checks that come before rustls looks inside.
    const FAKE_CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    /// Asserts that `config` is refused with the file and every one of
    /// `says` in the message.
    fn refused(name: &str, config: &str, says: &[&str]) {
        let d = Dir::new(name);
        d.file("cert.pem", FAKE_CERT);
        d.file("garbage.key", "not a key\n");
        let path = d.file("web.yml", config);
        let err = match WebConfig::load(&path) {
            Ok(_) => panic!("{config} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(&path.display().to_string()), "the file is not named: {err}");
        for part in says {
            assert!(err.contains(part), "{part:?} not in: {err}");
        }
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        refused("unknown", "tls_server_config:\n  cert_fiel: cert.pem\n", &["cert_fiel"]);
        refused("unknown-top", "basic_auth_user:\n  a: b\n", &["basic_auth_user"]);
    }

    #[test]
    fn a_missing_cert_file_is_refused_by_name() {
        refused(
            "missing-cert",
            "tls_server_config:\n  cert_file: nowhere.pem\n  key_file: garbage.key\n",
            &["tls_server_config.cert_file", "nowhere.pem"],
        );
        refused("no-cert", "tls_server_config:\n  key_file: garbage.key\n", &["missing one of cert or cert_file"]);
    }

    #[test]
    fn an_unreadable_key_is_refused_by_name() {
        refused(
            "bad-key",
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: garbage.key\n",
            &["tls_server_config.key_file", "no PEM private key"],
        );
        refused(
            "gone-key",
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: gone.key\n",
            &["tls_server_config.key_file: cannot read"],
        );
    }

    #[test]
    fn a_hash_that_is_not_bcrypt_is_refused_by_user() {
        refused(
            "not-bcrypt",
            "basic_auth_users:\n  alice: plaintext\n",
            &["basic_auth_users.alice", "not a bcrypt hash"],
        );
    }

    #[test]
    fn unsupported_client_auth_types_are_refused_by_name() {
        let base = "tls_server_config:\n  cert_file: cert.pem\n  key_file: garbage.key\n";
        refused(
            "any-cert",
            &format!("{base}  client_auth_type: RequireAnyClientCert\n"),
            &["client_auth_type: RequireAnyClientCert accepts"],
        );
        refused(
            "typo-auth",
            &format!("{base}  client_auth_type: RequireAndVerify\n"),
            &["client_auth_type: unknown value \"RequireAndVerify\""],
        );
        refused(
            "no-ca",
            &format!("{base}  client_auth_type: RequireAndVerifyClientCert\n"),
            &["client_ca_file is missing"],
        );
        refused(
            "ca-no-auth",
            &format!("{base}  client_ca_file: cert.pem\n"),
            &["client_ca_file is given but client_auth_type is NoClientCert"],
        );
    }

    #[test]
    fn other_unsupported_settings_are_refused_by_name() {
        let base = "tls_server_config:\n  cert_file: cert.pem\n  key_file: garbage.key\n";
        refused(
            "tls10",
            &format!("{base}  min_version: TLS10\n"),
            &["tls_server_config.min_version: TLS10 is not supported"],
        );
        refused(
            "sans",
            &format!("{base}  client_allowed_sans: [a]\n"),
            &["client_allowed_sans: needs client_auth_type"],
        );
        refused("rate", "rate_limit:\n  interval: 1s\n  burst: 2\n", &["rate_limit"]);
        refused(
            "header",
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            &["http_server_config.headers.X-Frame-Options"],
        );
    }

    #[test]
    fn basic_auth_checks_the_password_and_remembers_a_success() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let d = Dir::new("auth");
        let path =
            d.file("web.yml", &format!("basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  http2: false\n"));
        let config = WebConfig::load(&path).unwrap();
        assert!(config.tls.is_none());
        let auth = config.auth.unwrap();
        let header = |user_pass: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass)).into_bytes()
        };
        assert!(!auth.allows(None));
        assert!(!auth.allows(Some(&header("alice:wrong"))));
        assert!(!auth.allows(Some(&header("bob:s3cret"))));
        assert!(!auth.allows(Some(b"Bearer xyz")));
        assert!(auth.verified.lock().unwrap().is_empty(), "a failure was remembered");
        assert!(auth.allows(Some(&header("alice:s3cret"))));
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(auth.allows(Some(&header("alice:s3cret"))), "the remembered pair");
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_empty_file_configures_nothing() {
        let d = Dir::new("empty");
        for text in ["", "# nothing yet\n"] {
            let config = WebConfig::load(&d.file("web.yml", text)).unwrap();
            assert!(config.tls.is_none() && config.auth.is_none() && config.headers.is_empty());
        }
    }

    #[test]
    fn cipher_suites_and_curves_use_go_names_and_refuse_what_ring_lacks() {
        let t = |suites: &[&str], curves: &[&str]| TlsFile {
            cipher_suites: Some(suites.iter().map(|s| (*s).to_owned()).collect()),
            curve_preferences: Some(curves.iter().map(|s| (*s).to_owned()).collect()),
            ..TlsFile::default()
        };
        let names = |p: &CryptoProvider| p.cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect::<Vec<_>>();
        let p = crypto_provider(&t(
            &[
                "TLS_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            ],
            &["CurveP384", "X25519"],
        ))
        .unwrap();
        let tls12: Vec<String> = names(&p).into_iter().filter(|n| !n.starts_with("TLS13_")).collect();
        assert_eq!(tls12, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]);
        assert_eq!(names(&p).iter().filter(|n| n.starts_with("TLS13_")).count(), 3, "TLS 1.3 suites are kept");
        let groups: Vec<NamedGroup> = p.kx_groups.iter().map(|k| k.name()).collect();
        assert_eq!(groups, [NamedGroup::secp384r1, NamedGroup::X25519]);
        // Empty lists keep the defaults.
        let p = crypto_provider(&t(&[], &[])).unwrap();
        assert_eq!(names(&p), names(&provider::default_provider()));

        let err =
            |suites: &[&str], curves: &[&str]| format!("{:#}", crypto_provider(&t(suites, curves)).err().unwrap());
        let e = err(&["TLS_RSA_WITH_AES_128_CBC_SHA"], &[]);
        assert!(e.contains("cipher_suites: TLS_RSA_WITH_AES_128_CBC_SHA is not offered"), "{e}");
        let e = err(&[], &["CurveP521"]);
        assert!(e.contains("curve_preferences: CurveP521 is not offered"), "{e}");
        let e = err(&[], &["CurveP999"]);
        assert!(e.contains("curve_preferences: unknown curve CurveP999"), "{e}");
    }

    #[test]
    fn client_allowed_sans_are_dns_names_or_addresses_with_a_required_certificate() {
        let sans = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let ok = allowed_sans(Some(&sans(&["scraper.example", "127.0.0.1"])), Some(true)).unwrap().unwrap();
        assert_eq!(ok.len(), 2);
        assert!(allowed_sans(None, None).unwrap().is_none());
        for (names, required, says) in [
            (sans(&["a"]), Some(false), "needs client_auth_type RequireAndVerifyClientCert"),
            (sans(&[]), Some(true), "an empty list would refuse every client"),
            (sans(&["ops@example.com"]), Some(true), "\"ops@example.com\" is not a DNS name or IP address"),
        ] {
            let e = format!("{:#}", allowed_sans(Some(&names), required).err().unwrap());
            assert!(e.contains(says), "{e}");
        }
    }
}
