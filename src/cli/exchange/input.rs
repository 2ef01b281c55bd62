//! The `exchange` command's input: the file (one OAuthClient, maybe its credentials Secret and
//! the ConfigMap or Secret of its CA bundle), the credentials from the flags, the environment or
//! that Secret — each value read by the operator's own rules
//! ([`crate::oauth::credentials::value`]) — and the trust: `--ca-bundle-file`, else the bundle
//! `caBundleRef` names in the file, else the default trust.

use std::collections::BTreeMap;
use std::io::Read as _;

use base64::Engine as _;
use serde::Deserialize;

use super::Outcome;
use crate::api::crd::{CaBundleKind, OAuthClient};
use crate::api::reason::{Failure, Reason};
use crate::cli::ExchangeArgs;
use crate::oauth::credentials::{self, Credentials, Origin, SecretData};
use crate::oauth::trust::{self, Trust};
use crate::output::redact::Sensitive;
use crate::spec::ClientSettings;

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
            let value = serde_yaml::Value::deserialize(document).map_err(|e| {
                Outcome::Input(format!("document {} is not valid YAML: {e}", index + 1))
            })?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            match kind {
                "OAuthClient" => {
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
    fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, Outcome> {
        if let Some(v) = self.string_data.get(key) {
            return Ok(Some(v.clone().into_bytes()));
        }
        match self.data.get(key) {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map(Some)
                .map_err(|_| {
                    Outcome::Input(format!(
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
            .map(|s| s.bytes(&reference.key)),
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

/// The credentials: client_id from `--client-id` (or `OAUTH_CLIENT_ID`), else `spec.clientId`,
/// else the Secret in the file; the secret from `--client-secret-file` (byte for byte), else
/// `OAUTH_CLIENT_SECRET`, else the Secret in the file.
pub fn credentials(
    args: &ExchangeArgs,
    client: &OAuthClient,
    secrets: &[FileSecret],
) -> Result<Credentials, Outcome> {
    let reference = &client.spec.credentials_secret_ref;
    let file_secret = secrets.iter().find(|s| s.metadata.name == reference.name);
    let in_file = |key: &str| -> Result<Option<Vec<u8>>, Outcome> {
        file_secret
            .map(|s| s.bytes(key))
            .transpose()
            .map(Option::flatten)
    };
    let no_client_id = || {
        Failure::new(
            Reason::CredentialsNotFound,
            "no client_id: pass --client-id, set OAUTH_CLIENT_ID or spec.clientId, or include the credentials Secret in the file",
        )
    };
    let client_id = match (&args.client_id, &client.spec.client_id) {
        (Some(id), _) => credentials::value(
            Some(id.as_bytes()),
            Origin::Other("--client-id"),
            no_client_id,
        )?,
        (None, Some(id)) => credentials::value(
            Some(id.as_bytes()),
            Origin::Other("spec.clientId"),
            no_client_id,
        )?,
        (None, None) => {
            let bytes = in_file(&reference.client_id_key)?;
            let origin = Origin::Key {
                secret: &reference.name,
                key: &reference.client_id_key,
            };
            credentials::value(bytes.as_deref(), origin, no_client_id)?
        }
    };
    let no_secret = || {
        Failure::new(
            Reason::CredentialsNotFound,
            "no client secret: pass --client-secret-file, set OAUTH_CLIENT_SECRET, or include the credentials Secret in the file",
        )
    };
    let client_secret = if let Some(path) = &args.client_secret_file {
        let bytes = std::fs::read(path).map_err(|e| {
            Outcome::Input(format!(
                "cannot read --client-secret-file {}: {e}",
                path.display()
            ))
        })?;
        if bytes.ends_with(b"\n") {
            eprintln!(
                "warning: {} ends with a newline, which is sent as part of the secret (write it with printf or echo -n)",
                path.display()
            );
        }
        let origin = format!("--client-secret-file {}", path.display());
        credentials::value(Some(&bytes), Origin::Other(&origin), no_secret)?
    } else if let Some(value) = std::env::var_os("OAUTH_CLIENT_SECRET") {
        let bytes = value.into_encoded_bytes();
        credentials::value(
            Some(&bytes),
            Origin::Other("OAUTH_CLIENT_SECRET"),
            no_secret,
        )?
    } else {
        let bytes = in_file(&reference.client_secret_key)?;
        let origin = Origin::Key {
            secret: &reference.name,
            key: &reference.client_secret_key,
        };
        credentials::value(bytes.as_deref(), origin, no_secret)?
    };
    Ok(Credentials {
        client_id,
        client_secret: Sensitive::new(client_secret),
    })
}
