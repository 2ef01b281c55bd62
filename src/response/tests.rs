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

fn read_with(
    status: u16,
    headers: &[(&str, &str)],
    body: &str,
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
    let ctx = ReadContext {
        fields,
        default_lifetime: Duration::from_secs(3600),
        now: now(),
        request_url: &request_url,
        redact: &[SECRET],
    };
    read(
        &Response {
            status,
            headers: &map,
            body: body.as_bytes(),
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
    let obj: Map<String, Value> = serde_json::from_str(r#"{"a":{"b":[{"c":1}]},"x":"y"}"#).unwrap();
    assert_eq!(lookup(&obj, "a.b.0.c"), Some(&Value::from(1)));
    assert_eq!(lookup(&obj, "a.b.1.c"), None);
    assert_eq!(lookup(&obj, "x.y"), None);
    assert_eq!(lookup(&obj, ""), None);
    assert_eq!(lookup(&obj, "a..b"), None);
}
