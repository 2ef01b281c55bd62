//! The `exchange` command's input: the file (one OAuthClient, maybe its credentials Secret and
//! the ConfigMap or Secret of its CA bundle), the credentials from the flags, the environment or
//! that Secret — each value read by the operator's own rules
//! ([`crate::oauth::credentials::value`]) — and the trust: `--ca-bundle-file`, else the bundle
//! `caBundleRef` names in the file, else the default trust.

use crate::cli::terminal::errln;
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;

use super::Outcome;
use crate::api::crd::{CaBundleKind, CredentialsSecretRef, OAuthClient};
use crate::api::reason::{Failure, Reason};
use crate::cli::ExchangeArgs;
use crate::oauth::credentials::{self, Credentials, Item, Origin, SecretData, Subject};
use crate::oauth::transport::trust::{self, Trust};
use crate::spec::{ClientSettings, SubjectSettings};

pub fn read_input(args: &ExchangeArgs) -> Result<String, Outcome> {
    let path = &args.file;
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Outcome::Input(format!("cannot read standard input: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Outcome::Input(format!("cannot read {}: {e}", path.display())))
    }
}

/// The documents of the input file that matter: one OAuthClient, any Secrets and ConfigMaps.
pub struct InputFile {
    pub client: OAuthClient,
    pub secrets: Vec<FileSecret>,
    pub config_maps: Vec<FileConfigMap>,
}

/// A ConfigMap given in the input file (only what is needed to find a CA bundle).
#[derive(Deserialize)]
pub struct FileConfigMap {
    metadata: FileMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default, rename = "binaryData")]
    binary_data: BTreeMap<String, String>,
}

/// A Secret given in the input file (only what is needed to find credentials).
#[derive(Deserialize)]
pub struct FileSecret {
    metadata: FileMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct FileMeta {
    name: String,
}

impl InputFile {
    pub fn parse(text: &str) -> Result<Self, Outcome> {
        let mut clients = Vec::new();
        let mut secrets = Vec::new();
        let mut config_maps = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let mut value = serde_yaml::Value::deserialize(document).map_err(|e| {
                Outcome::Input(format!("document {} is not valid YAML: {e}", index + 1))
            })?;
            // Merge keys (`<<: *base`) as kubectl applies them, before anything is checked.
            value.apply_merge().map_err(|e| {
                Outcome::Input(format!("document {} is not valid YAML: {e}", index + 1))
            })?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            match kind {
                "OAuthClient" => {
                    let json = serde_json::to_value(&value).map_err(|e| {
                        Outcome::Input(format!("document {} is not JSON-like: {e}", index + 1))
                    })?;
                    let problems = super::strict::problems(&json, &crate::api::crd::schema());
                    if !problems.is_empty() {
                        return Err(Outcome::Input(format!(
                            "document {} is not an OAuthClient the cluster would accept; nothing was sent:\n  {}",
                            index + 1,
                            problems.join("\n  ")
                        )));
                    }
                    let client: OAuthClient = serde_yaml::from_value(value).map_err(|e| {
                        Outcome::Input(format!(
                            "document {} is not a valid OAuthClient: {e}",
                            index + 1
                        ))
                    })?;
                    clients.push(client);
                }
                "Secret" => {
                    if let Ok(secret) = serde_yaml::from_value::<FileSecret>(value) {
                        secrets.push(secret);
                    }
                }
                "ConfigMap" => {
                    if let Ok(map) = serde_yaml::from_value::<FileConfigMap>(value) {
                        config_maps.push(map);
                    }
                }
                _ => {}
            }
        }
        match clients.len() {
            0 => Err(Outcome::Input("the file holds no OAuthClient".into())),
            1 => Ok(InputFile {
                client: clients.remove(0),
                secrets,
                config_maps,
            }),
            n => Err(Outcome::Input(format!(
                "the file holds {n} OAuthClients; put the one to try in its own file"
            ))),
        }
    }
}

impl FileSecret {
    /// The bytes of `key`: `stringData` wins over `data` (base64), as the API server merges
    /// them.
    fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Failure> {
        if let Some(v) = self.string_data.get(key) {
            return Ok(Some(v.clone().into_bytes()));
        }
        match self.data.get(key) {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map(Some)
                .map_err(|_| {
                    Failure::invalid_credentials(format!(
                        "Secret {}: data.{key} is not valid base64",
                        self.metadata.name
                    ))
                }),
            None => Ok(None),
        }
    }
}

impl FileConfigMap {
    /// The bytes of `key`: `data`, else `binaryData` (base64).
    fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Outcome> {
        if let Some(v) = self.data.get(key) {
            return Ok(Some(v.clone().into_bytes()));
        }
        match self.binary_data.get(key) {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map(Some)
                .map_err(|_| {
                    Outcome::Input(format!(
                        "ConfigMap {}: binaryData.{key} is not valid base64",
                        self.metadata.name
                    ))
                }),
            None => Ok(None),
        }
    }
}

/// What the endpoint is verified against: `--ca-bundle-file` alone; else the bundle the spec's
/// `caBundleRef` names, from a ConfigMap or Secret of that name in the file; else the default
/// trust (with `--ca-file`).
pub fn trust(
    args: &ExchangeArgs,
    settings: &ClientSettings,
    file: &InputFile,
) -> Result<Trust, Outcome> {
    if let Some(path) = &args.ca_bundle_file {
        let bundle = super::super::read_ca_bundle_file("--ca-bundle-file", path)
            .map_err(Outcome::Input)??;
        return Ok(Trust::Bundle(bundle));
    }
    let Some(reference) = &settings.ca_bundle else {
        return Ok(Trust::Default);
    };
    let name = reference.name.as_str();
    let value = match reference.kind {
        CaBundleKind::ConfigMap => file
            .config_maps
            .iter()
            .find(|m| m.metadata.name == name)
            .map(|m| m.bytes(&reference.key)),
        CaBundleKind::Secret => file
            .secrets
            .iter()
            .find(|s| s.metadata.name == name)
            .map(|s| s.bytes(&reference.key).map_err(Outcome::from)),
    };
    let Some(value) = value.transpose()? else {
        return Err(Failure::new(
            Reason::CredentialsNotFound,
            format!(
                "spec.caBundleRef names {}, which is not in the file: pass --ca-bundle-file FILE or include it",
                trust::object_name(reference)
            ),
        )
        .into());
    };
    let data: BTreeMap<String, Vec<u8>> = value
        .map(|v| (reference.key.clone(), v))
        .into_iter()
        .collect();
    let bundle = trust::from_object(reference, "the file", Some(&data as &dyn SecretData))?;
    Ok(Trust::Bundle(bundle))
}

/// The credentials the spec's method needs, by the operator's own reading rules
/// ([`credentials::read`]): client_id from `--client-id` (or `OAUTH_CLIENT_ID`), else
/// `spec.clientId`, else the Secret in the file; the secret from `--client-secret-file` (byte
/// for byte), else `OAUTH_CLIENT_SECRET`, else the Secret in the file; the private key and the
/// certificate chain from `--private-key-file` and `--certificate-file`, else the Secret in the
/// file; a ready assertion (standing in for a ServiceAccount token) from `--assertion-file`.
pub fn credentials(
    args: &ExchangeArgs,
    client: &OAuthClient,
    secrets: &[FileSecret],
) -> Result<Credentials, Outcome> {
    let reference = client.spec.credentials_secret_ref.as_ref();
    let source = CliSource {
        args,
        spec_client_id: client.spec.client_id.as_deref(),
        reference,
        file_secret: reference.and_then(|r| secrets.iter().find(|s| s.metadata.name == r.name)),
        files: Files::read(args)?,
    };
    Ok(credentials::read(
        crate::spec::client_auth_method(&client.spec),
        &source,
    )?)
}

/// The subject token of a token exchange: from `--subject-token-file`, else (a `secretRef`
/// subject) from that Secret in the file; messages name the file or the key, never the token.
/// `None` for client credentials (where `--subject-token-file` is refused).
pub fn subject(
    args: &ExchangeArgs,
    settings: &ClientSettings,
    secrets: &[FileSecret],
) -> Result<Option<Subject>, Outcome> {
    let Some(exchange) = &settings.exchange.token_exchange else {
        if args.subject_token_file.is_some() || args.subject_token_type.is_some() {
            return Err(Outcome::Input(
                "--subject-token-file and --subject-token-type are for grantType TokenExchange; the file's client makes a client-credentials request".into(),
            ));
        }
        return Ok(None);
    };
    let (bytes, origin) = match (&args.subject_token_file, &exchange.subject) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Outcome::Input(format!(
                    "cannot read --subject-token-file {}: {e}",
                    path.display()
                ))
            })?;
            (
                Some(bytes),
                format!("--subject-token-file {}", path.display()),
            )
        }
        (None, SubjectSettings::Secret { name, key }) => {
            let secret = secrets.iter().find(|s| s.metadata.name == *name);
            let bytes = match secret {
                Some(secret) => secret.bytes(key)?,
                None => None,
            };
            (bytes, format!("key {key} of Secret {name}"))
        }
        (None, subject) => {
            return Err(Failure::new(
                Reason::CredentialsNotFound,
                format!(
                    "no subject token: the subject is {}, which this command cannot read; pass --subject-token-file",
                    subject.describe()
                ),
            )
            .into());
        }
    };
    let token = credentials::token(bytes.as_deref(), Origin::Other(&origin), || {
        Failure::new(
            Reason::CredentialsNotFound,
            format!(
                "no subject token: pass --subject-token-file, or include the Secret ({origin}) in the file"
            ),
        )
    })?;
    Ok(Some(Subject::Token(token)))
}

/// The files named on the command line, read once (a file that cannot be read is an input
/// error naming it).
struct Files {
    client_secret: Option<Vec<u8>>,
    private_key: Option<Vec<u8>>,
    certificate: Option<Vec<u8>>,
    assertion: Option<Vec<u8>>,
}

impl Files {
    fn read(args: &ExchangeArgs) -> Result<Self, Outcome> {
        let read = |flag: &str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, Outcome> {
            path.as_ref()
                .map(|path| {
                    std::fs::read(path).map_err(|e| {
                        Outcome::Input(format!("cannot read {flag} {}: {e}", path.display()))
                    })
                })
                .transpose()
        };
        let files = Files {
            client_secret: read("--client-secret-file", &args.client_secret_file)?,
            private_key: read("--private-key-file", &args.private_key_file)?,
            certificate: read("--certificate-file", &args.certificate_file)?,
            assertion: read("--assertion-file", &args.assertion_file)?,
        };
        if let (Some(bytes), Some(path)) = (&files.client_secret, &args.client_secret_file) {
            if bytes.ends_with(b"\n") {
                errln!(
                    "warning: {} ends with a newline, which is sent as part of the secret (write it with printf or echo -n)",
                    path.display()
                );
            }
        }
        Ok(files)
    }
}

/// The command line, the environment and the file's Secret as a credentials source.
struct CliSource<'a> {
    args: &'a ExchangeArgs,
    spec_client_id: Option<&'a str>,
    reference: Option<&'a CredentialsSecretRef>,
    file_secret: Option<&'a FileSecret>,
    files: Files,
}

impl CliSource<'_> {
    /// The value of the Secret key for `item` in the file's Secret, if any.
    fn in_file(&self, item: Item) -> Result<Option<(Vec<u8>, String)>, Failure> {
        let (Some(reference), Some(secret)) = (self.reference, self.file_secret) else {
            return Ok(None);
        };
        let key = match item {
            Item::ClientId => &reference.client_id_key,
            Item::ClientSecret => &reference.client_secret_key,
            Item::PrivateKey => &reference.private_key_key,
            Item::Certificate => &reference.certificate_key,
            Item::Assertion => return Ok(None),
        };
        let origin = Origin::Key {
            secret: &reference.name,
            key,
        };
        Ok(secret.bytes(key)?.map(|b| (b, origin.to_string())))
    }

    fn flag(&self, item: Item) -> Option<(Vec<u8>, String)> {
        let (bytes, flag, path) = match item {
            Item::ClientId => return None,
            Item::ClientSecret => (
                &self.files.client_secret,
                "--client-secret-file",
                &self.args.client_secret_file,
            ),
            Item::PrivateKey => (
                &self.files.private_key,
                "--private-key-file",
                &self.args.private_key_file,
            ),
            Item::Certificate => (
                &self.files.certificate,
                "--certificate-file",
                &self.args.certificate_file,
            ),
            Item::Assertion => (
                &self.files.assertion,
                "--assertion-file",
                &self.args.assertion_file,
            ),
        };
        let path = path.as_ref()?;
        bytes
            .clone()
            .map(|b| (b, format!("{flag} {}", path.display())))
    }
}

impl credentials::Source for CliSource<'_> {
    fn get(&self, item: Item) -> Result<Option<(Vec<u8>, String)>, Failure> {
        if item == Item::ClientId {
            if let Some(id) = &self.args.client_id {
                return Ok(Some((id.clone().into_bytes(), "--client-id".into())));
            }
            if let Some(id) = self.spec_client_id {
                return Ok(Some((id.as_bytes().to_vec(), "spec.clientId".into())));
            }
        }
        if let Some(found) = self.flag(item) {
            return Ok(Some(found));
        }
        if item == Item::ClientSecret {
            if let Some(value) = std::env::var_os("OAUTH_CLIENT_SECRET") {
                return Ok(Some((
                    value.into_encoded_bytes(),
                    "OAUTH_CLIENT_SECRET".into(),
                )));
            }
        }
        self.in_file(item)
    }

    fn missing(&self, item: Item) -> Failure {
        let message = match item {
            Item::ClientId => {
                "no client_id: pass --client-id, set OAUTH_CLIENT_ID or spec.clientId, or include the credentials Secret in the file"
            }
            Item::ClientSecret => {
                "no client secret: pass --client-secret-file, set OAUTH_CLIENT_SECRET, or include the credentials Secret in the file"
            }
            Item::PrivateKey => {
                "no private key: pass --private-key-file, or include the credentials Secret (with the key spec.credentialsSecretRef.privateKeyKey) in the file"
            }
            Item::Certificate => {
                "no certificate: pass --certificate-file, or include the credentials Secret (with the key spec.credentialsSecretRef.certificateKey) in the file"
            }
            Item::Assertion => {
                "no client assertion: clientAuthMethod ServiceAccountToken needs --assertion-file (a ServiceAccount token for the audience, e.g. from kubectl create token NAME --audience AUDIENCE)"
            }
        };
        Failure::new(Reason::CredentialsNotFound, message)
    }
}
