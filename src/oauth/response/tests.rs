//! Table-driven tests of response reading, with vendors' documented bodies verbatim and
//! real-world shapes.

use super::*;

const NOW: i64 = 1_700_000_000;
const SECRET: &str = "the-client-secret-value";

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

fn url() -> Url {
    Url::parse("https://idp.example/oauth/token").unwrap()
}

fn credentials(id: &str, secret: &str) -> crate::oauth::request::Credentials {
    crate::oauth::request::Credentials::with_secret(id, secret)
}

fn read_with(
    status: u16,
    headers: &[(&str, &str)],
    body: &str,
    fields: &ResponseFields,
) -> Result<Token, Failure> {
    read_as(
        "client-id",
        SECRET,
        status,
        headers,
        body.as_bytes(),
        fields,
    )
}

/// Reads a response with the credentials `id` / `secret`.
fn read_as(
    id: &str,
    secret: &str,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    fields: &ResponseFields,
) -> Result<Token, Failure> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let request_url = url();
    let scrubber = Scrubber::for_credentials(&credentials(id, secret));
    let ctx = ReadContext {
        fields,
        default_lifetime: Duration::from_secs(3600),
        now: now(),
        request_url: &request_url,
        scrubber: &scrubber,
    };
    read(
        &Response {
            status,
            headers: &map,
            body,
        },
        &ctx,
    )
}

fn ok(status: u16, body: &str) -> Token {
    read_with(
        status,
        &[("content-type", "application/json")],
        body,
        &ResponseFields::default(),
    )
    .unwrap_or_else(|e| panic!("expected a token from {body}: {e}"))
}

fn fail(status: u16, headers: &[(&str, &str)], body: &str) -> Failure {
    let failure = read_with(status, headers, body, &ResponseFields::default())
        .expect_err("expected a failure");
    assert!(!failure.message.contains(SECRET), "{}", failure.message);
    failure
}

/// A JWT with the given claims (signature is junk: it is never verified).
fn jwt(claims: serde_json::Value) -> String {
    let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        enc(&serde_json::json!({"alg": "RS256", "typ": "JWT"})),
        enc(&claims)
    )
}

// === documented vendor bodies, verbatim ===

#[test]
fn microboxlabs_documented_success() {
    let t = ok(
        200,
        r#"{ "access_token": "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9...", "token_type": "Bearer", "expires_in": 86400, "scope": "asset:track:write" }"#,
    );
    assert_eq!(
        t.access_token.expose(),
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9..."
    );
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_at, at(NOW + 86400));
    assert_eq!(t.lifetime_source, LifetimeSource::ExpiresIn);
    assert_eq!(t.scope.as_deref(), Some("asset:track:write"));
    assert_eq!(t.issued_at, now());
}

#[test]
fn microbilt_documented_success_with_string_fields() {
    let t = ok(
        200,
        r#"{ "issued_at" : "1525190727056", "expires_in" : "3599", "token_type" : "BearerToken", "access_token" : "kE8WyfAAgaoPPisGakxRw9aEL8eH", "status" : "approved" }"#,
    );
    assert_eq!(t.access_token.expose(), "kE8WyfAAgaoPPisGakxRw9aEL8eH");
    assert_eq!(t.token_type, "Bearer");
    // Expiry from our clock, not from the vendor's (2018) issued_at.
    assert_eq!(t.expires_at, at(NOW + 3599));
    assert_eq!(t.vendor_issued_at, Some(at(1_525_190_727)));
    assert_eq!(t.scope, None);
}

#[test]
fn iotspot_documented_success() {
    let body = r#"{
    "access_token": "eyJraWQiOiJGZHFMUGJma3hoalNMbUdiRFZVU3BRXC94QytXYmh0SnhudXQwZGRPQ0RFdz0iLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiI2dTEzcXZtaWlzazhvZjMwNGNmZGZ1YnEzcyIsInRva2VuX3VzZSI6ImFjY2VzcyIsInNjb3BlIjoiaW90c3BvdFwvb3V0bG9vayBpb3RzcG90XC9wcm9kdWN0aW9uIiwiYXV0aF90aW1lIjoxNjQ2MzM1MzcxLCJpc3MiOiJodHRwczpcL1wvY29nbml0by1pZHAuZXUtY2VudHJhbC0xLmFtYXpvbmF3cy5jb21cL2V1LWNlbnRyYWwtMV9PaUVJWHFDUkciLCJleHAiOjE2NDYzMzg5NzEsImlhdCI6MTY0NjMzNTM3MSwidmVyc2lvbiI6MiwianRpIjoiM2ZiZGVlYjItYTBhNi00M2Q2LWE4MDItYjRlNTljMjk4ZWQ0IiwiY2xpZW50X2lkIjoiNnUxM3F2bWlpc2s4b2YzMDRjZmRmdWJxM3MifQ.f_8vwwlGU5PyivmfVjW0bYAyt7J4QJJx1dOXbfAVYCZ_Sa5eTiWXIbRxqb2WG0K63BvnOR3__wJj2iEQAE8ibkl712brlrPECwA5PwAjmKFa-sNISg4acaR4MmpKTOfpGqEVAejsh8O7s7XL8u-mn_0G6kx2S6lmB72D7iPVnUu4bgwD6vdmKYqR9djAj5eGSxYIAKKYYidcyMWZ58Fu5Un04eLuDQlHla5H6DiNoChm_UM9waiohXuWaknGF4CbRniAAUcZ5Xd6fBRkxdtpp0zRXy4AyAbekmKym05ypieNmYk3W7xeRTFvOEBQCbrU6AYacK6Iw4QQwKB032Q-gg",
    "expires_in": 3600,
    "token_type": "Bearer"
}"#;
    let t = ok(200, body);
    assert!(t.access_token.expose().starts_with("eyJraWQiOiJGZHFM"));
    // expires_in wins over the (long past) JWT exp.
    assert_eq!(t.expires_at, at(NOW + 3600));
    assert_eq!(t.lifetime_source, LifetimeSource::ExpiresIn);
}

#[test]
fn microboxlabs_documented_errors() {
    let f = fail(
        401,
        &[],
        r#"{ "error": "access_denied", "error_description": "Unauthorized" }"#,
    );
    assert_eq!(
        f.reason,
        Reason::InvalidClient,
        "HTTP 401 wins over access_denied"
    );
    assert_eq!(
        f.message,
        "HTTP 401 Unauthorized: access_denied: Unauthorized"
    );
    let f = fail(
        403,
        &[],
        r#"{ "error": "access_denied", "error_description": "Client is not authorized to access the audience" }"#,
    );
    assert_eq!(f.reason, Reason::AccessDenied);
    assert!(
        f.message
            .contains("Client is not authorized to access the audience")
    );
}

// === real-world shapes ===

#[test]
fn apigee_style_string_fields() {
    let t = ok(
        200,
        r#"{"refresh_token_expires_in":"0","api_product_list":"[Sandbox]","organization_name":"acme","developer.email":"dev@acme.test","token_type":"BearerToken","issued_at":"1700000000123","client_id":"abc","access_token":"Yx8K2tB1Pz","application_name":"a1","scope":"","expires_in":"1799","refresh_count":"0","status":"approved"}"#,
    );
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_at, at(NOW + 1799));
    assert_eq!(t.scope, None, "empty scope is unknown");
    assert_eq!(t.vendor_issued_at, Some(at(1_700_000_000)));
}

#[test]
fn apigee_error_envelopes() {
    let f = fail(
        401,
        &[],
        r#"{"ErrorCode" : "invalid_client", "Error" :"Client credentials are invalid"}"#,
    );
    assert_eq!(f.reason, Reason::InvalidClient);
    assert_eq!(
        f.message,
        "HTTP 401 Unauthorized: invalid_client: Client credentials are invalid"
    );
    let f = fail(
        400,
        &[],
        r#"{"ErrorCode" : "invalid_client", "Error" :"ClientId is Invalid"}"#,
    );
    assert_eq!(
        f.reason,
        Reason::InvalidClient,
        "error code invalid_client on a 400"
    );
    let f = fail(
        401,
        &[],
        r#"{"fault":{"faultstring":"Invalid ApiKey","detail":{"errorcode":"oauth.v2.InvalidApiKey"}}}"#,
    );
    assert_eq!(
        f.message,
        "HTTP 401 Unauthorized: Invalid ApiKey: oauth.v2.InvalidApiKey"
    );
    let f = fail(
        400,
        &[],
        r#"{"ErrorCode":"invalid_request","Error":"Unsupported grant type : password"}"#,
    );
    assert_eq!(f.reason, Reason::InvalidRequest);
}

#[test]
fn entra_id_v1_all_strings_with_expires_on() {
    let t = ok(
        200,
        r#"{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599","expires_on":"1700003000","not_before":"1699999700","resource":"https://graph.microsoft.com","access_token":"eyJ0eXAiOi.eyJhdWQiOi.sig"}"#,
    );
    assert_eq!(t.expires_at, at(1_700_003_000), "expires_on wins");
    assert_eq!(t.lifetime_source, LifetimeSource::ExpiresOn);
    // A past expires_on is ignored in favour of expires_in.
    let t = ok(
        200,
        r#"{"access_token":"abcd","expires_in":"60","expires_on":"1600000000"}"#,
    );
    assert_eq!(t.expires_at, at(NOW + 60));
}

#[test]
fn salesforce_without_expires_in_uses_the_default_lifetime() {
    let t = ok(
        200,
        r#"{"access_token":"00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVpxezPwuX5VAIrrbbHMuol7GQxnMeYMN7cj8EoWr78nt1u44zU31IbYNNJguseu","signature":"SSSbLO/gBhmmyNUvN18ODBDFYHzakxOMgqYtu+hDPsc=","scope":"web openid api id","instance_url":"https://yourInstance.salesforce.com","id":"https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS","token_type":"Bearer","issued_at":"1700000000000"}"#,
    );
    assert_eq!(t.expires_at, at(NOW + 3600));
    assert_eq!(t.lifetime_source, LifetimeSource::DefaultLifetime);
    assert_eq!(t.scope.as_deref(), Some("web openid api id"));
}

#[test]
fn twitch_scope_array_and_lowercase_bearer() {
    let t = ok(
        200,
        r#"{"access_token":"jostpf5q0uzmxmkba9iyug38kjtgh","expires_in":5011271,"token_type":"bearer","scope":["channel:read:subscriptions","user:read:email"]}"#,
    );
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(
        t.scope.as_deref(),
        Some("channel:read:subscriptions user:read:email")
    );
    assert_eq!(t.expires_at, at(NOW + 5_011_271));
}

#[test]
fn expires_in_edge_values() {
    // (expires_in JSON, expected lifetime in seconds, source)
    let cases = [
        ("3599", 3599, LifetimeSource::ExpiresIn),
        ("\"3599\"", 3599, LifetimeSource::ExpiresIn),
        ("3599.0", 3599, LifetimeSource::ExpiresIn),
        ("\"3599.0\"", 3599, LifetimeSource::ExpiresIn),
        ("3599.9", 3599, LifetimeSource::ExpiresIn),
        ("\" 120 \"", 120, LifetimeSource::ExpiresIn),
        ("9999999999", 365 * 24 * 3600, LifetimeSource::ExpiresIn),
        ("1e300", 365 * 24 * 3600, LifetimeSource::ExpiresIn),
        ("0", 3600, LifetimeSource::DefaultLifetime),
        ("-1", 3600, LifetimeSource::DefaultLifetime),
        ("null", 3600, LifetimeSource::DefaultLifetime),
        ("\"abc\"", 3600, LifetimeSource::DefaultLifetime),
        ("\"\"", 3600, LifetimeSource::DefaultLifetime),
        ("\"NaN\"", 3600, LifetimeSource::DefaultLifetime),
        ("\"inf\"", 3600, LifetimeSource::DefaultLifetime),
        ("0.5", 3600, LifetimeSource::DefaultLifetime),
        ("true", 3600, LifetimeSource::DefaultLifetime),
        ("[60]", 3600, LifetimeSource::DefaultLifetime),
    ];
    for (value, secs, source) in cases {
        let body = format!(r#"{{"access_token":"opaque-token","expires_in":{value}}}"#);
        let t = ok(200, &body);
        assert_eq!(
            (t.expires_at, t.lifetime_source),
            (at(NOW + secs), source),
            "expires_in {value}"
        );
    }
}

#[test]
fn missing_token_type_is_bearer_and_others_are_kept() {
    assert_eq!(ok(200, r#"{"access_token":"abcd"}"#).token_type, "Bearer");
    for (sent, kept) in [
        ("\"\"", "Bearer"),
        ("\"BEARER\"", "Bearer"),
        ("\"bearertoken\"", "Bearer"),
        ("\"DPoP\"", "DPoP"),
        ("\"N_A\"", "N_A"),
        ("\"mac\"", "mac"),
        ("42", "Bearer"),
    ] {
        let body = format!(r#"{{"access_token":"abcd","token_type":{sent}}}"#);
        assert_eq!(ok(200, &body).token_type, kept, "{sent}");
    }
}

#[test]
fn jwt_exp_is_the_fallback_lifetime() {
    let token = jwt(serde_json::json!({"sub": "svc", "exp": NOW + 900}));
    let t = ok(
        200,
        &format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#),
    );
    assert_eq!(t.expires_at, at(NOW + 900));
    assert_eq!(t.lifetime_source, LifetimeSource::JwtExp);
    // An expired JWT exp, or a JWT without exp, falls back to the default lifetime.
    for claims in [
        serde_json::json!({"exp": NOW - 10}),
        serde_json::json!({"sub": "x"}),
    ] {
        let token = jwt(claims);
        let t = ok(200, &format!(r#"{{"access_token":"{token}"}}"#));
        assert_eq!(t.lifetime_source, LifetimeSource::DefaultLifetime);
    }
    // Not a JWT at all.
    let t = ok(200, r#"{"access_token":"a.b.c"}"#);
    assert_eq!(t.lifetime_source, LifetimeSource::DefaultLifetime);
}

#[test]
fn any_2xx_is_a_success_candidate() {
    for status in [200, 201, 202, 203, 299] {
        let t = ok(status, r#"{"access_token":"abcd","expires_in":60}"#);
        assert_eq!(t.expires_at, at(NOW + 60));
    }
}

#[test]
fn form_encoded_success_body() {
    let t = read_with(
        200,
        &[("content-type", "application/x-www-form-urlencoded")],
        "access_token=tok%2Fen%3D&token_type=bearer&expires_in=300&scope=a+b",
        &ResponseFields::default(),
    )
    .unwrap();
    assert_eq!(t.access_token.expose(), "tok/en=");
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_at, at(NOW + 300));
    assert_eq!(t.scope.as_deref(), Some("a b"));
}

#[test]
fn response_fields_read_dotted_paths_and_top_level_names() {
    let fields = ResponseFields {
        access_token: "data.token".into(),
        expires_in: "data.ttl".into(),
        token_type: "meta.kind".into(),
        scope: "data.grants".into(),
    };
    let body = r#"{"data":{"token":"nested-token","ttl":"120","grants":["x","y"]},"meta":{"kind":"bearer"}}"#;
    let t = read_with(200, &[], body, &fields).unwrap();
    assert_eq!(t.access_token.expose(), "nested-token");
    assert_eq!(t.expires_at, at(NOW + 120));
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.scope.as_deref(), Some("x y"));

    // A top-level key containing a dot is found by its name; arrays are indexed.
    let fields = ResponseFields {
        access_token: "access.token".into(),
        expires_in: "items.1.ttl".into(),
        ..ResponseFields::default()
    };
    let body = r#"{"access.token":"dotted-name","items":[{"ttl":1},{"ttl":90}]}"#;
    let t = read_with(200, &[], body, &fields).unwrap();
    assert_eq!(t.access_token.expose(), "dotted-name");
    assert_eq!(t.expires_at, at(NOW + 90));
}

// === unusable 2xx ===

#[test]
fn two_hundred_with_error_is_invalid_response() {
    let f = fail(
        200,
        &[],
        r#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
    );
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert!(
        f.message
            .contains("invalid_client: Client authentication failed"),
        "{}",
        f.message
    );
    // Even with an access_token beside it.
    let f = fail(
        200,
        &[],
        r#"{"access_token":"abcd","error":"server_error"}"#,
    );
    assert_eq!(f.reason, Reason::InvalidResponse);
    // A null error is no error.
    ok(200, r#"{"access_token":"abcd","error":null}"#);
}

#[test]
fn two_hundred_without_access_token_is_invalid_response_without_values() {
    let f = fail(200, &[], r#"{"token":"leaky-token-value","expires":60}"#);
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert!(f.message.contains("has no access_token"), "{}", f.message);
    assert!(f.message.contains("token, expires") || f.message.contains("expires, token"));
    assert!(!f.message.contains("leaky-token-value"));
    for body in [
        r#"{"access_token":""}"#,
        r#"{"access_token":"   "}"#,
        r#"{"access_token":42}"#,
        r#"{"access_token":null}"#,
    ] {
        assert_eq!(
            fail(200, &[], body).reason,
            Reason::InvalidResponse,
            "{body}"
        );
    }
}

#[test]
fn html_pages_are_never_tokens() {
    let page = "<!DOCTYPE html><html><head><title>Sign in - Portal</title></head><body><form>...</form></body></html>";
    for content_type in ["text/html; charset=utf-8", "application/json"] {
        let f = fail(200, &[("content-type", content_type)], page);
        assert_eq!(f.reason, Reason::InvalidResponse);
        assert!(f.message.contains("Sign in - Portal"), "{}", f.message);
    }
    for body in [
        "",
        "not a token",
        "[1,2]",
        "\"str\"",
        "{broken json",
        "a=b&<c>=d",
    ] {
        assert_eq!(
            fail(200, &[], body).reason,
            Reason::InvalidResponse,
            "{body:?}"
        );
    }
}

// === error classification ===

#[test]
fn classification_table() {
    // (status, body, reason)
    let cases: &[(u16, &str, Reason)] = &[
        (401, "", Reason::InvalidClient),
        (401, r#"{"error":"invalid_request"}"#, Reason::InvalidClient),
        (400, r#"{"error":"invalid_client"}"#, Reason::InvalidClient),
        (403, "", Reason::AccessDenied),
        (
            400,
            r#"{"error":"unauthorized_client"}"#,
            Reason::AccessDenied,
        ),
        (400, r#"{"error":"access_denied"}"#, Reason::AccessDenied),
        (
            400,
            r#"{"error":"invalid_scope","error_description":"scope x"}"#,
            Reason::InvalidScope,
        ),
        (
            400,
            r#"{"error":"invalid_request"}"#,
            Reason::InvalidRequest,
        ),
        (400, r#"{"error":"invalid_grant"}"#, Reason::InvalidRequest),
        (
            400,
            r#"{"error":"unsupported_grant_type"}"#,
            Reason::InvalidRequest,
        ),
        (404, "Not Found", Reason::InvalidRequest),
        (405, "", Reason::InvalidRequest),
        (415, "", Reason::InvalidRequest),
        (429, r#"{"error":"invalid_client"}"#, Reason::RateLimited),
        (
            500,
            r#"{"error":"server_error"}"#,
            Reason::EndpointUnavailable,
        ),
        (
            502,
            "<html><title>502 Bad Gateway</title></html>",
            Reason::EndpointUnavailable,
        ),
        (503, "", Reason::EndpointUnavailable),
        (504, "", Reason::EndpointUnavailable),
        (100, "", Reason::InvalidResponse),
        (
            400,
            r#"{"error":{"code":"invalid_client","message":"bad"}}"#,
            Reason::InvalidClient,
        ),
    ];
    for (status, body, reason) in cases {
        assert_eq!(fail(*status, &[], body).reason, *reason, "{status} {body}");
    }
}

#[test]
fn error_messages_from_each_envelope() {
    let cases: &[(u16, &str, &str)] = &[
        (
            400,
            r#"{"error":"invalid_scope","error_description":"Scope 'x' is not allowed"}"#,
            "HTTP 400 Bad Request: invalid_scope: Scope 'x' is not allowed",
        ),
        (
            400,
            r#"{"error":"invalid_request"}"#,
            "HTTP 400 Bad Request: invalid_request",
        ),
        (
            400,
            r#"{"reason":"bad audience"}"#,
            "HTTP 400 Bad Request: bad audience",
        ),
        (
            400,
            r#"{"message":"Missing field audience"}"#,
            "HTTP 400 Bad Request: Missing field audience",
        ),
        (
            422,
            r#"{"errors":[{"message":"a is bad"},{"message":"b is bad"}]}"#,
            "HTTP 422 Unprocessable Entity: a is bad; b is bad",
        ),
        (
            400,
            r#"{"error":{"code":"BadRequest","message":"Audience missing"}}"#,
            "HTTP 400 Bad Request: BadRequest: Audience missing",
        ),
        (
            503,
            "<html><head><title>503 Service Temporarily Unavailable</title></head><body>...</body></html>",
            "HTTP 503 Service Unavailable: 503 Service Temporarily Unavailable",
        ),
        (
            502,
            "<h1>Bad\ngateway</h1>",
            "HTTP 502 Bad Gateway: Bad gateway",
        ),
        (500, "", "HTTP 500 Internal Server Error"),
        (599, "", "HTTP 599"),
    ];
    for (status, body, message) in cases {
        assert_eq!(fail(*status, &[], body).message, *message, "{body}");
    }
}

#[test]
fn messages_never_carry_the_secret_and_are_bounded() {
    let echo = format!(
        r#"{{"error":"invalid_client","error_description":"bad secret {SECRET} for client"}}"#
    );
    let f = fail(401, &[], &echo);
    assert_eq!(
        f.message,
        "HTTP 401 Unauthorized: invalid_client: bad secret [redacted] for client"
    );
    let long = format!(
        r#"{{"error":"invalid_request","error_description":"{}"}}"#,
        "x".repeat(5000)
    );
    let f = fail(400, &[], &long);
    assert!(f.message.chars().count() < 260, "{}", f.message.len());
    let f = fail(500, &[], "line1\r\nline2\u{7}\u{1b}[31m");
    assert!(!f.message.chars().any(char::is_control), "{:?}", f.message);
}

#[test]
fn redirects_name_the_location_host() {
    let f = fail(
        302,
        &[("location", "https://login.other.example/authorize?x=1")],
        "",
    );
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert!(f.message.contains("login.other.example"), "{}", f.message);
    assert!(f.message.contains("HTTP 302 Found redirect"));
    let f = fail(307, &[("location", "/v2/token")], "");
    assert!(
        f.message.contains("idp.example"),
        "relative Location: {}",
        f.message
    );
    let f = fail(301, &[], "");
    assert!(f.message.contains("without a usable Location"));
}

#[test]
fn retry_after_is_carried_on_failures() {
    let f = fail(429, &[("retry-after", "30")], r#"{"error":"slow_down"}"#);
    assert_eq!(f.reason, Reason::RateLimited);
    assert_eq!(f.retry_after, Some(Duration::from_secs(30)));
    assert!(f.message.ends_with("(Retry-After 30s)"), "{}", f.message);
    let f = fail(503, &[("retry-after", "Wed, 15 Nov 2023 00:13:20 GMT")], "");
    assert_eq!(f.retry_after, Some(Duration::from_secs(7200)));
    let f = fail(503, &[("retry-after", "soon")], "");
    assert_eq!(f.retry_after, None);
}

#[test]
fn retry_after_parser() {
    let now = SystemTime::from(now());
    let cases: &[(&str, Option<u64>)] = &[
        ("0", Some(0)),
        ("120", Some(120)),
        (" 5 ", Some(5)),
        ("99999999999999999999999", Some(MAX_RETRY_AFTER.as_secs())),
        ("Wed, 15 Nov 2023 00:13:20 GMT", Some(7200)),
        ("Tue, 14 Nov 2023 22:14:20 GMT", Some(60)),
        ("Tue, 14 Nov 2023 22:13:20 GMT", Some(0)),
        ("Sun, 06 Nov 1994 08:49:37 GMT", Some(0)),
        ("Tuesday, 14-Nov-23 22:14:20 GMT", Some(60)),
        ("Tue Nov 14 22:14:20 2023", Some(60)),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("tomorrow", None),
    ];
    for (value, secs) in cases {
        assert_eq!(
            parse_retry_after(value, now),
            secs.map(Duration::from_secs),
            "{value:?}"
        );
    }
}

#[test]
fn lookup_edge_cases() {
    let text = r#"{"a":{"b":[{"c":1}]},"x":"y"}"#;
    let obj = Body::parse(text.as_bytes(), &["a", "x", ""]).unwrap();
    let lookup = |obj: &Body<'_>, path: &str| obj.lookup(path).and_then(Field::small_value);
    assert_eq!(lookup(&obj, "a.b.0.c"), Some(Value::from(1)));
    assert_eq!(lookup(&obj, "a.b.1.c"), None);
    assert_eq!(lookup(&obj, "x.y"), None);
    assert_eq!(lookup(&obj, ""), None);
    assert_eq!(lookup(&obj, "a..b"), None);
}

// === memory ===

/// A maximal (1 MiB) body of the given shape, built without slack capacity.
fn maximal_body(shape: &str) -> String {
    let n = crate::oauth::transport::MAX_BODY;
    let mut s = String::with_capacity(n);
    let fill = |s: &mut String, piece: &str, tail: &str| {
        while s.len() + piece.len() + tail.len() <= n {
            s.push_str(piece);
        }
        s.push_str(tail);
    };
    match shape {
        // One huge token (refused by the limit).
        "token" => {
            s.push_str(r#"{"access_token":""#);
            fill(&mut s, "a", r#""}"#);
        }
        // A usable token beside one huge string.
        "padding" => {
            s.push_str(r#"{"access_token":"abcdefgh12345678","padding":""#);
            fill(&mut s, "a", r#""}"#);
        }
        // A usable token beside an array of half a million numbers.
        "numbers" => {
            s.push_str(r#"{"access_token":"abcdefgh12345678","n":["#);
            fill(&mut s, "0,", "0]}");
        }
        // A usable token among 100,000 tiny fields.
        "keys" => {
            s.push_str(r#"{"access_token":"abcdefgh12345678""#);
            let mut i = 0u32;
            while s.len() + 16 < n {
                s.push_str(&format!(",\"{i:x}\":0"));
                i += 1;
            }
            s.push('}');
        }
        // A huge error description.
        "plain-error" => {
            s.push_str(r#"{"error":"invalid_request","error_description":""#);
            fill(&mut s, "a", r#""}"#);
        }
        // A huge error description with escapes, so that it cannot be borrowed.
        "error" => {
            s.push_str(r#"{"error":"invalid_request","error_description":""#);
            fill(&mut s, "a\\n", r#""}"#);
        }
        // A huge HTML page.
        "html" => {
            s.push_str("<html><title>x</title>");
            fill(&mut s, "<p>a</p>", "</html>");
        }
        _ => unreachable!("{shape}"),
    }
    assert_eq!(s.capacity(), n);
    s
}

/// The shapes of [`maximal_body`] and the status they are read with.
const SHAPES: [(&str, u16); 7] = [
    ("token", 200),
    ("padding", 200),
    ("numbers", 200),
    ("keys", 200),
    ("plain-error", 400),
    ("error", 400),
    ("html", 502),
];

#[test]
fn maximal_bodies_are_read_and_refused_as_expected() {
    for (shape, status) in SHAPES {
        let body = maximal_body(shape);
        let result = read_with(status, &[], &body, &ResponseFields::default());
        match shape {
            "token" => {
                let f = result.unwrap_err();
                let len = crate::oauth::transport::MAX_BODY - r#"{"access_token":""}"#.len();
                let expected = format!("access_token is {len} bytes long; at most 65536");
                assert!(f.message.contains(&expected), "{}", f.message);
            }
            "padding" | "numbers" | "keys" => {
                assert_eq!(result.unwrap().access_token.expose(), "abcdefgh12345678");
            }
            _ => {
                let f = result.unwrap_err();
                assert!(f.message.chars().count() < 300, "{shape}: {}", f.message);
            }
        }
    }
}

/// Peak heap of reading one maximal body, for a profiler: run alone with
/// `PROBE=<shape> heaptrack <test binary> --ignored --exact response::tests::memory_probe`
/// (shape `none` builds the body and reads nothing, for the baseline).
#[test]
#[ignore]
fn memory_probe() {
    let shape = std::env::var("PROBE").unwrap_or_else(|_| "token".into());
    let status = SHAPES.iter().find(|s| s.0 == shape).map_or(200, |s| s.1);
    let body = maximal_body(if shape == "none" { "token" } else { &shape });
    if shape != "none" {
        let result = read_with(status, &[], &body, &ResponseFields::default());
        println!("{shape}: {} bytes, ok={}", body.len(), result.is_ok());
    }
}

// === echoed secrets (attacks) ===

use crate::oauth::request::scrubbing_tests::{NASTY, NASTY_ID, echo_forms, text_forms};

const ECHO_TOKEN: &str = "tok/en+value=0123456789";

fn nasty(status: u16, headers: &[(&str, &str)], body: &str) -> Failure {
    read_as(
        NASTY_ID,
        NASTY,
        status,
        headers,
        body.as_bytes(),
        &ResponseFields::default(),
    )
    .expect_err("expected a failure")
}

/// Panics if `message` holds any of `forms`.
fn assert_no_form(message: &str, forms: &[String], what: &str) {
    for form in forms {
        assert!(
            !message.contains(form.as_str()),
            "{what}: {form:?} in {message:?}"
        );
    }
}

#[test]
fn an_echoed_secret_is_scrubbed_from_every_kind_of_message() {
    let forms = echo_forms(NASTY_ID, NASTY);
    // What the 2xx bodies below must not show either: the token they carry.
    let all: Vec<String> = {
        let mut all = forms.clone();
        all.extend(text_forms(ECHO_TOKEN));
        all
    };
    for form in forms.iter().chain(&text_forms(ECHO_TOKEN)) {
        let echo = format!("you sent {form} as the secret");
        let token_echo = format!("{echo}, and {ECHO_TOKEN} came back");
        let html =
            format!("<html><head><title>Denied: {form}</title></head><body>{form}</body></html>");
        let cases: Vec<(u16, String)> = vec![
            (
                400,
                serde_json::json!({"error": "invalid_request", "error_description": echo}).to_string(),
            ),
            (
                401,
                serde_json::json!({"ErrorCode": "invalid_client", "Error": echo}).to_string(),
            ),
            (
                401,
                serde_json::json!({"fault": {"faultstring": echo, "detail": {"errorcode": form}}})
                    .to_string(),
            ),
            (400, serde_json::json!({"message": echo}).to_string()),
            (
                422,
                serde_json::json!({"errors": [{"message": echo}, form]}).to_string(),
            ),
            (
                400,
                serde_json::json!({"error": {"code": form, "message": echo}}).to_string(),
            ),
            (401, html.clone()),
            (500, format!("<p>{}</p><pre>{echo}</pre>", "x".repeat(50))),
            (500, format!("plain {echo} {}", "y ".repeat(300))),
            (
                200,
                serde_json::json!({"access_token": ECHO_TOKEN, "error": "invalid_request", "error_description": token_echo})
                    .to_string(),
            ),
            (
                200,
                serde_json::json!({"access_token": ECHO_TOKEN, "error": {"detail": token_echo}})
                    .to_string(),
            ),
            (200, serde_json::json!({ form.as_str(): 1, "x": 2 }).to_string()),
            (200, html),
            (
                200,
                format!("error=invalid_request&error_description={}", form_urlencoded::byte_serialize(echo.as_bytes()).collect::<String>()),
            ),
        ];
        for (status, body) in cases {
            let f = nasty(status, &[], &body);
            let carries_token = body.contains(&format!(r#""access_token":"{ECHO_TOKEN}""#));
            let forbidden = if carries_token { &all } else { &forms };
            assert_no_form(&f.message, forbidden, &format!("{status} {body}"));
            assert!(!f.message.chars().any(char::is_control), "{:?}", f.message);
        }
        if !forms.contains(form) {
            continue;
        }
        // The text around the secret survives.
        let f = nasty(
            400,
            &[],
            &serde_json::json!({"error": "invalid_request", "error_description": echo}).to_string(),
        );
        assert_eq!(
            f.message, "HTTP 400 Bad Request: invalid_request: you sent [redacted] as the secret",
            "{form:?}"
        );
    }
}

#[test]
fn a_secret_with_a_tag_in_it_is_scrubbed_before_tags_are_stripped() {
    let secret = "abcd<efgh>ijkl";
    for body in [
        format!("<p>secret {secret} refused</p>"),
        "<p>secret abcd&lt;efgh&gt;ijkl refused</p>".to_owned(),
        "<p>secret abcd ijkl refused</p>".to_owned(),
    ] {
        let f = read_as(
            "id",
            secret,
            500,
            &[],
            body.as_bytes(),
            &ResponseFields::default(),
        )
        .unwrap_err();
        assert_eq!(
            f.message,
            "HTTP 500 Internal Server Error: secret [redacted] refused"
        );
    }
}

#[test]
fn a_secret_that_ends_in_a_newline_is_scrubbed_trimmed_too() {
    let secret = "newline-secret\n";
    for echoed in ["newline-secret\n", "newline-secret", " newline-secret\r\n"] {
        let body = serde_json::json!({"error": "invalid_client", "error_description": format!("bad {echoed} x")})
            .to_string();
        let f = read_as(
            "id",
            secret,
            401,
            &[],
            body.as_bytes(),
            &ResponseFields::default(),
        )
        .unwrap_err();
        assert_eq!(
            f.message,
            "HTTP 401 Unauthorized: invalid_client: bad [redacted] x"
        );
    }
}

#[test]
fn a_cut_never_leaves_part_of_a_secret() {
    let description = |text: String| {
        serde_json::json!({"error": "invalid_request", "error_description": text}).to_string()
    };
    // "invalid_request: " is 17 characters: the secret starts at character 195 of 200.
    let pad = "x".repeat(177);
    for form in echo_forms(NASTY_ID, NASTY) {
        // Whole across the excerpt limit: scrubbed first, then the cut drops the marker.
        let f = nasty(400, &[], &description(format!("{pad} {form} tail")));
        assert_eq!(
            f.message,
            format!("HTTP 400 Bad Request: invalid_request: {pad}…"),
            "{form:?}"
        );
        // Only its start (the endpoint cut it) across the limit: the excerpt is dropped.
        let start: String = form.chars().take(12).collect();
        let f = nasty(400, &[], &description(format!("{pad} {start} and more")));
        assert_eq!(f.message, "HTTP 400 Bad Request", "{form:?}");
        // Across the window a body is read in: dropped.
        let text = format!("{} {form} end", "y".repeat(SCAN_WINDOW - 6));
        let f = nasty(500, &[], &text);
        assert_eq!(f.message, "HTTP 500 Internal Server Error", "{form:?}");
        let text = format!("{} {form} end", "y".repeat(SCAN_WINDOW - 17 - 6));
        let f = nasty(400, &[], &description(text));
        assert_eq!(f.message, "HTTP 400 Bad Request", "{form:?}");
    }
}

/// An error answer, what is shown of it when the secret is too short to scrub reliably, and
/// its reason.
type ShortSecretCase = (
    u16,
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
    Reason,
);

/// The answers of [`short_secrets_keep_no_body_text_only_rfc_codes`], each mentioning the short
/// secrets `abc` and `abcdefg`.
fn short_secret_cases() -> Vec<ShortSecretCase> {
    vec![
        (
            401,
            &[],
            r#"{"error":"invalid_client","error_description":"bad abc for abcdefg"}"#,
            "HTTP 401 Unauthorized: invalid_client",
            Reason::InvalidClient,
        ),
        (
            400,
            &[],
            r#"{"error":"custom_error","error_description":"abc"}"#,
            "HTTP 400 Bad Request",
            Reason::InvalidRequest,
        ),
        (
            400,
            &[],
            r#"{"error":"invalid_scope","error_description":"nope abc"}"#,
            "HTTP 400 Bad Request: invalid_scope",
            Reason::InvalidScope,
        ),
        (
            400,
            &[],
            r#"{"error":"access_denied"}"#,
            "HTTP 400 Bad Request",
            Reason::AccessDenied,
        ),
        (
            401,
            &[],
            r#"{"ErrorCode":"invalid_client","Error":"Client abc is invalid"}"#,
            "HTTP 401 Unauthorized: invalid_client",
            Reason::InvalidClient,
        ),
        (
            401,
            &[],
            r#"{"fault":{"faultstring":"Invalid ApiKey abc","detail":{"errorcode":"oauth.v2.InvalidApiKey"}}}"#,
            "HTTP 401 Unauthorized",
            Reason::InvalidClient,
        ),
        (
            502,
            &[],
            "<html><title>abc gateway</title></html>",
            "HTTP 502 Bad Gateway",
            Reason::EndpointUnavailable,
        ),
        (
            500,
            &[],
            "abc plain text",
            "HTTP 500 Internal Server Error",
            Reason::EndpointUnavailable,
        ),
        (
            429,
            &[("retry-after", "30")],
            r#"{"error":"slow_down","error_description":"abc"}"#,
            "HTTP 429 Too Many Requests (Retry-After 30s)",
            Reason::RateLimited,
        ),
        (
            200,
            &[],
            r#"{"error":"invalid_client","error_description":"abc"}"#,
            "HTTP 200 OK carries an error instead of a token: invalid_client",
            Reason::InvalidResponse,
        ),
        (
            200,
            &[],
            r#"{"error":"server_error","access_token":"abcdefgh-token"}"#,
            "HTTP 200 OK carries an error instead of a token",
            Reason::InvalidResponse,
        ),
        (
            200,
            &[],
            r#"{"token":"abc","abcdefg":1}"#,
            "HTTP 200 OK has no access_token; set spec.responseFields.accessToken if the token is elsewhere",
            Reason::InvalidResponse,
        ),
        (
            200,
            &[("content-type", "text/abc")],
            "<html><title>abc</title></html>",
            "HTTP 200 OK with a body that is neither a JSON object nor form-encoded",
            Reason::InvalidResponse,
        ),
        (
            302,
            &[("location", "https://abcdefg.example/")],
            "",
            "HTTP 302 Found redirect to a host not shown; redirects are not followed so that credentials are never sent to another URL: set spec.tokenUrl to the final URL",
            Reason::InvalidResponse,
        ),
    ]
}

#[test]
fn short_secrets_keep_no_body_text_only_rfc_codes() {
    for secret in ["abc", "abcdefg"] {
        let read = |status: u16, headers: &[(&str, &str)], body: &str| {
            read_as(
                "id",
                secret,
                status,
                headers,
                body.as_bytes(),
                &ResponseFields::default(),
            )
            .unwrap_err()
        };
        let cases = short_secret_cases();
        for (status, headers, body, message, reason) in cases {
            let f = read(status, headers, body);
            assert_eq!(f.message, message, "{secret}: {status} {body}");
            assert_eq!(f.reason, reason, "{secret}: {status} {body}");
        }
    }
}

#[test]
fn a_short_access_token_keeps_no_body_text_either() {
    let f = fail(
        200,
        &[],
        r#"{"access_token":"abc","error":"invalid_request","error_description":"token abc"}"#,
    );
    assert_eq!(
        f.message,
        "HTTP 200 OK carries an error instead of a token: invalid_request"
    );
}

// === limits and character rules ===

fn token_body(token: &str, extra: &str) -> String {
    format!(
        r#"{{"access_token":{}{extra}}}"#,
        serde_json::to_string(token).unwrap()
    )
}

#[test]
fn the_access_token_is_at_most_64_kib() {
    let token = "t".repeat(MAX_ACCESS_TOKEN);
    assert_eq!(
        ok(200, &token_body(&token, "")).access_token.expose(),
        &token
    );
    let f = fail(200, &[], &token_body(&format!("{token}t"), ""));
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert_eq!(
        f.message,
        "HTTP 200 OK: access_token is 65537 bytes long; at most 65536 are accepted"
    );
    // A custom location is named too.
    let fields = ResponseFields {
        access_token: "data.token".into(),
        ..ResponseFields::default()
    };
    let body = format!(
        r#"{{"data":{}}}"#,
        token_body(&format!("{token}t"), "").replace("access_token", "token")
    );
    let f = read_with(200, &[], &body, &fields).unwrap_err();
    assert_eq!(
        f.message,
        "HTTP 200 OK: access_token (read at data.token) is 65537 bytes long; at most 65536 are accepted"
    );
}

#[test]
fn token_type_and_scope_are_at_most_1_kib() {
    let long = "T".repeat(MAX_TOKEN_TYPE);
    let t = ok(
        200,
        &token_body("abcd", &format!(r#","token_type":"{long}""#)),
    );
    assert_eq!(t.token_type, long);
    let f = fail(
        200,
        &[],
        &token_body("abcd", &format!(r#","token_type":"{long}T""#)),
    );
    assert_eq!(
        f.message,
        "HTTP 200 OK: token_type is 1025 bytes long; at most 1024 are accepted"
    );

    let scope = ["s"; 512].join(" ");
    assert_eq!(scope.len(), 1023);
    let t = ok(200, &token_body("abcd", &format!(r#","scope":"{scope}s""#)));
    assert_eq!(t.scope.as_deref().map(str::len), Some(1024));
    let f = fail(
        200,
        &[],
        &token_body("abcd", &format!(r#","scope":"{scope}ss""#)),
    );
    assert_eq!(
        f.message,
        "HTTP 200 OK: scope is 1025 bytes long; at most 1024 are accepted"
    );
    // An array is measured joined.
    let items = serde_json::to_string(&vec!["ab"; 341]).unwrap();
    let t = ok(200, &token_body("abcd", &format!(r#","scope":{items}"#)));
    assert_eq!(t.scope.as_deref().map(str::len), Some(1022));
    let items = serde_json::to_string(&vec!["abc"; 300]).unwrap();
    let f = fail(
        200,
        &[],
        &token_body("abcd", &format!(r#","scope":{items}"#)),
    );
    assert_eq!(
        f.message,
        "HTTP 200 OK: scope is 1199 bytes long; at most 1024 are accepted"
    );
}

#[test]
fn access_tokens_must_be_visible_ascii() {
    for (token, what) in [
        ("abc\r\nX-Injected: 1", "a control character at byte 3"),
        ("abc def", "a space at byte 3"),
        (" abcdef", "a space at byte 0"),
        ("abcdef ", "a space at byte 6"),
        ("abc\u{0}def", "a control character at byte 3"),
        ("abc\u{7f}def", "a control character at byte 3"),
        ("abc\u{1b}[31mdef", "a control character at byte 3"),
        ("abcdéf", "a non-ASCII character at byte 4"),
        ("abc\u{202e}def", "a non-ASCII character at byte 3"),
    ] {
        let f = fail(200, &[], &token_body(token, ""));
        assert_eq!(f.reason, Reason::InvalidResponse);
        assert_eq!(
            f.message,
            format!(
                "HTTP 200 OK: access_token holds {what}; it must be visible ASCII (0x21-0x7E) without spaces"
            ),
            "{token:?}"
        );
        assert!(
            !f.message.contains("abc"),
            "the value is never shown: {}",
            f.message
        );
    }
    // Form-encoded bodies too.
    let f = read_with(
        200,
        &[],
        "access_token=abc%0D%0AX-Injected%3A+1&token_type=bearer",
        &ResponseFields::default(),
    )
    .unwrap_err();
    assert!(
        f.message.contains("access_token holds a control character"),
        "{}",
        f.message
    );
    assert!(!f.message.contains("Injected"));
    // Every visible character is fine.
    let visible: String = (0x21u8..=0x7e).map(char::from).collect();
    assert_eq!(
        ok(200, &token_body(&visible, "")).access_token.expose(),
        &visible
    );
}

#[test]
fn token_types_must_be_visible_ascii() {
    for (token_type, what) in [
        ("\u{1b}[31mBearer", "a control character at byte 0"),
        ("Bearer x", "a space at byte 6"),
        ("Bear\u{0}er", "a control character at byte 4"),
        ("Béarer", "a non-ASCII character at byte 1"),
    ] {
        let body = token_body(
            "abcd",
            &format!(
                r#","token_type":{}"#,
                serde_json::to_string(token_type).unwrap()
            ),
        );
        let f = fail(200, &[], &body);
        assert_eq!(
            f.message,
            format!(
                "HTTP 200 OK: token_type holds {what}; it must be visible ASCII (0x21-0x7E) without spaces"
            ),
            "{token_type:?}"
        );
    }
    // Surrounding whitespace is trimmed, as before.
    let t = ok(200, &token_body("abcd", r#","token_type":" DPoP\n""#));
    assert_eq!(t.token_type, "DPoP");
}

#[test]
fn scopes_must_be_nqchar_tokens_separated_by_single_spaces() {
    let rule = "scope must be RFC 6749 scope tokens (visible ASCII except '\"' and '\\') separated by single spaces";
    for (scope, what) in [
        ("read\u{202e}write", "a non-ASCII character at byte 4"),
        ("read\u{0}write", "a control character at byte 4"),
        ("read  write", "two spaces in a row at byte 5"),
        ("read \"write\"", "a double quote at byte 5"),
        ("read\\write", "a backslash at byte 4"),
        ("read\twrite", "a control character at byte 4"),
        ("read\nwrite", "a control character at byte 4"),
        ("read\u{a0}write", "a non-ASCII character at byte 4"),
    ] {
        let body = token_body(
            "abcd",
            &format!(r#","scope":{}"#, serde_json::to_string(scope).unwrap()),
        );
        let f = fail(200, &[], &body);
        assert_eq!(f.reason, Reason::InvalidResponse);
        assert_eq!(
            f.message,
            format!("HTTP 200 OK: scope holds {what}; {rule}"),
            "{scope:?}"
        );
    }
    for (items, problem) in [
        (
            r#"["read","a b"]"#,
            "scope element 1 holds a space at byte 1",
        ),
        (r#"["read",""]"#, "scope element 1 is empty"),
        (r#"["read",7]"#, "scope element 1 is not a string"),
        (
            r#"["re\"ad"]"#,
            "scope element 0 holds a double quote at byte 2",
        ),
        (r#"[" read"]"#, "scope element 0 holds a space at byte 0"),
        (
            r#"["\u202e"]"#,
            "scope element 0 holds a non-ASCII character at byte 0",
        ),
    ] {
        let f = fail(
            200,
            &[],
            &token_body("abcd", &format!(r#","scope":{items}"#)),
        );
        assert_eq!(
            f.message,
            format!("HTTP 200 OK: {problem}; {rule}"),
            "{items}"
        );
    }
    // Valid ones, surrounding whitespace of a string trimmed as before.
    for (scope, kept) in [
        (r#"" read write ""#, Some("read write")),
        (
            r#""a:b/c! #$%&'()*+,-.;<=>?@[]^_`{|}~""#,
            Some("a:b/c! #$%&'()*+,-.;<=>?@[]^_`{|}~"),
        ),
        (
            r#"["api://x/.default","offline_access"]"#,
            Some("api://x/.default offline_access"),
        ),
        ("[]", None),
        (r#""""#, None),
        ("42", None),
        ("null", None),
    ] {
        let t = ok(200, &token_body("abcd", &format!(r#","scope":{scope}"#)));
        assert_eq!(t.scope.as_deref(), kept, "{scope}");
    }
}

/// The failure of reading `body` (JSON) with `status`, scrubbed by `scrubber`.
fn refused_with(status: u16, body: &str, scrubber: &Scrubber<'_>) -> Failure {
    let request_url = url();
    let fields = ResponseFields::default();
    let ctx = ReadContext {
        fields: &fields,
        default_lifetime: Duration::from_secs(3600),
        now: now(),
        request_url: &request_url,
        scrubber,
    };
    let headers = HeaderMap::new();
    let response = Response {
        status,
        headers: &headers,
        body: body.as_bytes(),
    };
    read(&response, &ctx).expect_err("expected a failure")
}

/// Panics if `message` holds 20 characters in a row of `needle` (letters, digits, `-`, `_`:
/// what no encoding changes), so that a cut excerpt is caught too.
fn assert_no_run_of(message: &str, needle: &str, what: &str) {
    let plain: Vec<char> = needle.chars().collect();
    for window in plain.windows(20) {
        if window
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        {
            let run: String = window.iter().collect();
            assert!(!message.contains(&run), "{what}: {run:?} in {message:?}");
        }
    }
}

/// What a request with a client assertion could expose: the private key (PEM text, DER base64),
/// a private_key_jwt assertion signed with it, a client_secret and a client_secret_jwt assertion
/// MAC'd with it.
struct Exposed {
    identity: std::sync::Arc<crate::oauth::identity::Identity>,
    pem: &'static str,
    der_b64: String,
    signed: crate::base::Sensitive<String>,
    secret: crate::base::Sensitive<String>,
    maced: crate::base::Sensitive<String>,
}

fn exposed() -> Exposed {
    use crate::base::Sensitive;
    use crate::oauth::assertion::{Signer, build};
    use crate::oauth::identity::Identity;
    use crate::spec::AssertionSettings;

    let pem = include_str!("../../../tests/fixtures/client-auth/rsa-pkcs8.pem");
    let identity = std::sync::Arc::new(Identity::load(pem.as_bytes(), "tls.key", None).unwrap());
    let settings = AssertionSettings {
        algorithm: None,
        key_id: None,
        audience: url().to_string(),
        lifetime: Duration::from_secs(300),
    };
    let signed = build(
        &settings,
        "client-id",
        Signer::Key(&identity),
        now(),
        [7; 16],
    )
    .unwrap();
    let secret = Sensitive::new("a-client-secret-for-hs256-000000".to_owned());
    let maced = build(
        &settings,
        "client-id",
        Signer::Secret(&secret),
        now(),
        [8; 16],
    )
    .unwrap();
    Exposed {
        identity,
        pem,
        der_b64: pem.lines().filter(|l| !l.starts_with("-----")).collect(),
        signed,
        secret,
        maced,
    }
}

/// Each of `needles`, in every text form, echoed in four kinds of error body: no message built
/// with `scrubber` holds a 20-character run of any of them.
fn assert_echoes_scrubbed(scrubber: &Scrubber<'_>, needles: &[&str]) {
    use crate::oauth::request::scrubbing_tests::text_forms;
    for needle in needles {
        for form in text_forms(needle) {
            let echo = format!("you sent {form} as client_assertion");
            let bodies = [
                (
                    400,
                    serde_json::json!({"error": "invalid_client", "error_description": echo})
                        .to_string(),
                ),
                (
                    401,
                    serde_json::json!({"errors": [{"message": echo}], "detail": form}).to_string(),
                ),
                (
                    500,
                    format!("<html><title>{form}</title><pre>{echo}</pre></html>"),
                ),
                (503, format!("plain {echo} {}", "z ".repeat(200))),
            ];
            for (status, body) in bodies {
                let f = refused_with(status, &body, scrubber);
                for n in needles {
                    assert_no_run_of(&f.message, n, &format!("{status} {body:.60}"));
                }
            }
        }
    }
}

/// An endpoint that echoes a private_key_jwt, client_secret_jwt or ServiceAccountToken request
/// (or the key it somehow learnt): the private key, the assertion and its signature, in every
/// text form, never reach a message, nor any 20-character run of them.
#[test]
fn an_echoed_key_or_assertion_is_scrubbed_from_every_kind_of_message() {
    use crate::oauth::credentials::{Credentials, Proof};
    let e = exposed();
    let with = |proof| Credentials {
        subject: None,
        client_id: "client-id".into(),
        proof,
    };
    let signature = |jwt: &str| jwt.rsplit_once('.').unwrap().1.to_owned();
    let (s1, s2) = (signature(e.signed.expose()), signature(e.maced.expose()));
    let key = with(Proof::Key(e.identity.clone()));
    let scrubber = Scrubber::for_credentials(&key).with_assertion(e.signed.expose());
    assert_echoes_scrubbed(&scrubber, &[e.signed.expose(), &s1, e.pem, &e.der_b64]);
    let mac = with(Proof::Secret(e.secret.clone()));
    let scrubber = Scrubber::for_credentials(&mac).with_assertion(e.maced.expose());
    assert_echoes_scrubbed(&scrubber, &[e.maced.expose(), &s2, e.secret.expose()]);
    // ServiceAccountToken: the requested token is the credentials' ready assertion.
    let federated = with(Proof::Assertion(e.signed.clone()));
    assert_echoes_scrubbed(
        &Scrubber::for_credentials(&federated),
        &[e.signed.expose(), &s1],
    );
}

#[test]
fn issued_token_type_is_kept_when_it_is_visible_ascii_of_at_most_1_kib() {
    let t = ok(
        200,
        &token_body(
            "abcd",
            r#","issued_token_type":" urn:ietf:params:oauth:token-type:access_token ","token_type":"N_A""#,
        ),
    );
    assert_eq!(
        t.issued_token_type.as_deref(),
        Some("urn:ietf:params:oauth:token-type:access_token")
    );
    assert_eq!(t.token_type, "N_A");
    // Absent, empty or not a string: none.
    for extra in [
        "",
        r#","issued_token_type":"""#,
        r#","issued_token_type":7"#,
    ] {
        assert_eq!(ok(200, &token_body("abcd", extra)).issued_token_type, None);
    }
    // Hostile values are refused before anything is stored.
    let long = "u".repeat(MAX_TOKEN_TYPE + 1);
    let f = fail(
        200,
        &[],
        &token_body("abcd", &format!(r#","issued_token_type":"{long}""#)),
    );
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert!(
        f.message.contains("issued_token_type is 1025 bytes"),
        "{}",
        f.message
    );
    let f = fail(
        200,
        &[],
        &token_body("abcd", r#","issued_token_type":"urn:x\nSet-Cookie: a""#),
    );
    assert_eq!(f.reason, Reason::InvalidResponse);
    assert!(f.message.contains("issued_token_type"), "{}", f.message);
}
