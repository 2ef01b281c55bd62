//! The one write-retry helper of every write to the API server (the managed Secret, the
//! status): a transient failure right after an exchange must not cost the new token.

use std::time::Duration;

/// Writes are retried this many times in place before the reconcile gives up, so that a
/// transient API error right after an exchange does not cost the new token.
const WRITE_ATTEMPTS: u32 = 3;

/// Runs a write up to [`WRITE_ATTEMPTS`] times while it fails transiently (5xx, 429, 409
/// conflicts of versions, connection errors).
pub async fn with_retries<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match write().await {
            Err(e) if attempt < WRITE_ATTEMPTS && retriable(&e) => {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            result => return result,
        }
    }
}

fn retriable(error: &kube::Error) -> bool {
    match error {
        // 409 is a conflict of versions (worth retrying), or AlreadyExists (not).
        kube::Error::Api(e) => {
            e.code >= 500 || e.code == 429 || (e.code == 409 && e.reason != "AlreadyExists")
        }
        _ => true,
    }
}
