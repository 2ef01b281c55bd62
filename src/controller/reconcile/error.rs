//! Errors that end a reconcile early: a Kubernetes API call failed. Exchange failures are not
//! errors, they are recorded in the status.

/// One variant per step that talks to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the OAuthClient.
    #[error("reading the OAuthClient: {0}")]
    ReadClient(#[source] kube::Error),
    /// Reading the credentials Secret.
    #[error("reading the credentials Secret: {0}")]
    ReadCredentials(#[source] kube::Error),
    /// Reading the ConfigMap or Secret of `spec.caBundleRef`.
    #[error("reading the CA bundle: {0}")]
    ReadCaBundle(#[source] kube::Error),
    /// Reading the ServiceAccount (ServiceAccountToken).
    #[error("reading the ServiceAccount: {0}")]
    ReadServiceAccount(#[source] kube::Error),
    /// Reading the OAuthClient a token exchange's subject token comes from.
    #[error("reading the OAuthClient of the subject token: {0}")]
    ReadSubject(#[source] kube::Error),
    /// Reading the API server's issuer (ServiceAccountToken).
    #[error("reading the API server's issuer: {0}")]
    ReadIssuer(#[source] kube::Error),
    /// Requesting the ServiceAccount's token (ServiceAccountToken).
    #[error("requesting the ServiceAccount token: {0}")]
    RequestToken(#[source] kube::Error),
    /// Reading the managed Secret (or its metadata).
    #[error("reading the managed Secret: {0}")]
    ReadSecret(#[source] kube::Error),
    /// Creating or applying the managed Secret.
    #[error("writing the managed Secret: {0}")]
    WriteSecret(#[source] kube::Error),
    /// Applying the status.
    #[error("writing the OAuthClient status: {0}")]
    WriteStatus(#[source] kube::Error),
}

impl Error {
    /// The `error` label of `reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadClient(_) => "read_client",
            Error::ReadCredentials(_) => "read_credentials",
            Error::ReadCaBundle(_) => "read_ca_bundle",
            Error::ReadServiceAccount(_) => "read_service_account",
            Error::ReadSubject(_) => "read_subject",
            Error::ReadIssuer(_) => "read_issuer",
            Error::RequestToken(_) => "request_token",
            Error::ReadSecret(_) => "read_secret",
            Error::WriteSecret(_) => "write_secret",
            Error::WriteStatus(_) => "write_status",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_are_snake_case_and_distinct() {
        let e = || kube::Error::LinesCodecMaxLineLengthExceeded;
        let labels: Vec<&str> = [
            Error::ReadClient(e()),
            Error::ReadCredentials(e()),
            Error::ReadCaBundle(e()),
            Error::ReadServiceAccount(e()),
            Error::ReadSubject(e()),
            Error::ReadIssuer(e()),
            Error::RequestToken(e()),
            Error::ReadSecret(e()),
            Error::WriteSecret(e()),
            Error::WriteStatus(e()),
        ]
        .iter()
        .map(Error::metric_label)
        .collect();
        assert_eq!(
            labels,
            [
                "read_client",
                "read_credentials",
                "read_ca_bundle",
                "read_service_account",
                "read_subject",
                "read_issuer",
                "request_token",
                "read_secret",
                "write_secret",
                "write_status"
            ]
        );
    }
}
