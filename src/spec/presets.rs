//! Vendor presets, as data.
//!
//! A preset is one row of defaults. [`crate::spec`] merges the user's spec over the row; the
//! exchange code only ever reads the merged settings and never asks which vendor it talks to.
//!
//! To add a vendor: add a variant to [`Provider`](crate::api::crd::Provider), a row to [`PRESETS`],
//! regenerate the CRD (`cargo run -- crd > crds/oauthclient.yaml`), and add an emulator test if
//! the vendor has quirks. If the preset has a fixed token URL, add it to
//! [`PROVIDERS_WITH_TOKEN_URL`](crate::api::crd::PROVIDERS_WITH_TOKEN_URL) as well.

use crate::api::crd::{BasicAuthEncoding, ClientAuthMethod, GrantType, Provider, RequestEncoding};

/// The defaults a vendor preset supplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    /// The provider this row describes.
    pub provider: Provider,
    /// Fixed token endpoint, if the vendor has one.
    pub token_url: Option<&'static str>,
    /// Default client authentication.
    pub client_auth_method: ClientAuthMethod,
    /// Default Basic header encoding.
    pub basic_auth_encoding: BasicAuthEncoding,
    /// Default request body encoding.
    pub request_encoding: RequestEncoding,
    /// Default scopes.
    pub scopes: &'static [&'static str],
    /// With ClientSecretBasic, also send `client_id` (never the secret) in the body.
    pub client_id_in_body: bool,
    /// The vendor refuses a request without `audience` (the API identifier it gave with the
    /// credentials): a spec without one is refused before any request.
    pub needs_audience: bool,
    /// Default grant.
    pub grant_type: GrantType,
    /// Default subject token type of a token exchange (else the subject source's).
    pub subject_token_type: Option<&'static str>,
    /// One line for the presets table of `docs/reference.md`.
    pub notes: &'static str,
}

const fn row(provider: Provider) -> Preset {
    Preset {
        provider,
        token_url: None,
        client_auth_method: ClientAuthMethod::ClientSecretBasic,
        basic_auth_encoding: BasicAuthEncoding::UrlEncoded,
        request_encoding: RequestEncoding::Form,
        scopes: &[],
        client_id_in_body: false,
        needs_audience: false,
        grant_type: GrantType::ClientCredentials,
        subject_token_type: None,
        notes: "",
    }
}

const MICROBILT: Preset = Preset {
    token_url: Some("https://api.microbilt.com/OAuth/GetAccessToken"),
    client_auth_method: ClientAuthMethod::ClientSecretPost,
    request_encoding: RequestEncoding::Json,
    notes: "expires_in and issued_at (ms) arrive as strings; token_type BearerToken means Bearer",
    ..row(Provider::Microbilt)
};

/// Every preset, in the order of the contract.
pub const PRESETS: [Preset; 11] = [
    Preset {
        notes: "plain RFC 6749 section 4.4",
        ..row(Provider::Generic)
    },
    Preset {
        token_url: Some("https://api.microboxlabs.com/api/v1/login"),
        client_auth_method: ClientAuthMethod::ClientSecretPost,
        request_encoding: RequestEncoding::Json,
        needs_audience: true,
        notes: "audience expected",
        ..row(Provider::Microboxlabs)
    },
    MICROBILT,
    Preset {
        provider: Provider::MicrobiltSandbox,
        token_url: Some("https://apitest.microbilt.com/OAuth/GetAccessToken"),
        notes: "as microbilt",
        ..MICROBILT
    },
    Preset {
        token_url: Some(
            "https://iotspot-m2mauth-prod.auth.eu-central-1.amazoncognito.com/oauth2/token",
        ),
        basic_auth_encoding: BasicAuthEncoding::Raw,
        scopes: &["iotspot/openapi"],
        client_id_in_body: true,
        notes: "scope iotspot/openapi; client_id also in the body; Basic is raw base64(id:secret)",
        ..row(Provider::Iotspot)
    },
    Preset {
        basic_auth_encoding: BasicAuthEncoding::Raw,
        notes: "Basic is raw base64(id:secret)",
        ..row(Provider::AwsCognito)
    },
    Preset {
        client_auth_method: ClientAuthMethod::ClientSecretPost,
        request_encoding: RequestEncoding::Json,
        // Not required: a tenant's Default Audience stands in for a missing one.
        notes: "audience expected",
        ..row(Provider::Auth0)
    },
    row(Provider::Okta),
    Preset {
        client_auth_method: ClientAuthMethod::ClientSecretPost,
        notes: "scope usually <resource>/.default",
        ..row(Provider::EntraId)
    },
    row(Provider::Keycloak),
    Preset {
        token_url: Some("https://sts.googleapis.com/v1/token"),
        client_auth_method: ClientAuthMethod::None,
        scopes: &["https://www.googleapis.com/auth/cloud-platform"],
        needs_audience: true,
        grant_type: GrantType::TokenExchange,
        // token_exchange::JWT_TOKEN_TYPE (a test checks it).
        subject_token_type: Some("urn:ietf:params:oauth:token-type:jwt"),
        notes: "token exchange (RFC 8693), no client authentication; subject token type jwt; scope cloud-platform; audience: the workload identity pool provider",
        ..row(Provider::GcpSts)
    },
];

/// The preset row for a provider.
pub fn preset(provider: Provider) -> &'static Preset {
    PRESETS
        .iter()
        .find(|p| p.provider == provider)
        .expect("every provider has a preset row (checked by a test)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::crd::PROVIDERS_WITH_TOKEN_URL;

    #[test]
    fn every_provider_has_exactly_one_row_in_contract_order() {
        let names: Vec<_> = PRESETS.iter().map(|p| p.provider.as_str()).collect();
        assert_eq!(
            names,
            [
                "generic",
                "microboxlabs",
                "microbilt",
                "microbilt-sandbox",
                "iotspot",
                "aws-cognito",
                "auth0",
                "okta",
                "entra-id",
                "keycloak",
                "gcp-sts"
            ]
        );
        // The CRD's provider enum lists exactly these names.
        let crd =
            serde_json::to_value(<crate::api::crd::OAuthClient as kube::CustomResourceExt>::crd())
                .unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let allowed = &schema["properties"]["spec"]["properties"]["provider"]["enum"];
        assert_eq!(*allowed, serde_json::json!(names));
    }

    #[test]
    fn the_cel_rule_list_matches_the_presets_with_a_url() {
        let with_url: Vec<_> = PRESETS
            .iter()
            .filter(|p| p.token_url.is_some())
            .map(|p| p.provider.as_str())
            .collect();
        assert_eq!(with_url, PROVIDERS_WITH_TOKEN_URL);
    }

    #[test]
    fn rows_match_the_contract_table() {
        use BasicAuthEncoding::*;
        use ClientAuthMethod::*;
        use RequestEncoding::*;
        let expect = [
            (Provider::Generic, ClientSecretBasic, UrlEncoded, Form),
            (Provider::Microboxlabs, ClientSecretPost, UrlEncoded, Json),
            (Provider::Microbilt, ClientSecretPost, UrlEncoded, Json),
            (
                Provider::MicrobiltSandbox,
                ClientSecretPost,
                UrlEncoded,
                Json,
            ),
            (Provider::Iotspot, ClientSecretBasic, Raw, Form),
            (Provider::AwsCognito, ClientSecretBasic, Raw, Form),
            (Provider::Auth0, ClientSecretPost, UrlEncoded, Json),
            (Provider::Okta, ClientSecretBasic, UrlEncoded, Form),
            (Provider::EntraId, ClientSecretPost, UrlEncoded, Form),
            (Provider::Keycloak, ClientSecretBasic, UrlEncoded, Form),
            (Provider::GcpSts, ClientAuthMethod::None, UrlEncoded, Form),
        ];
        for (provider, auth, enc, body) in expect {
            let p = preset(provider);
            assert_eq!(
                (
                    p.client_auth_method,
                    p.basic_auth_encoding,
                    p.request_encoding
                ),
                (auth, enc, body),
                "{provider:?}"
            );
        }
        assert_eq!(preset(Provider::Iotspot).scopes, ["iotspot/openapi"]);
        assert!(preset(Provider::Iotspot).client_id_in_body);
        assert_eq!(
            preset(Provider::MicrobiltSandbox).token_url,
            Some("https://apitest.microbilt.com/OAuth/GetAccessToken")
        );
        assert_eq!(
            preset(Provider::Microbilt).token_url,
            Some("https://api.microbilt.com/OAuth/GetAccessToken")
        );
        let sts = preset(Provider::GcpSts);
        assert_eq!(sts.token_url, Some("https://sts.googleapis.com/v1/token"));
        assert_eq!(sts.grant_type, GrantType::TokenExchange);
        assert_eq!(
            sts.subject_token_type,
            Some(crate::spec::token_exchange::JWT_TOKEN_TYPE)
        );
        assert_eq!(
            sts.scopes,
            ["https://www.googleapis.com/auth/cloud-platform"]
        );
        assert!(sts.needs_audience);
        assert!(
            PRESETS
                .iter()
                .filter(|p| p.provider != Provider::GcpSts)
                .all(|p| p.grant_type == GrantType::ClientCredentials)
        );
    }
}
