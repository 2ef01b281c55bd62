#!/usr/bin/env python3
"""Writes the fuzz seed corpus from the bodies in the parsing tests (src/response/tests.rs,
src/duration.rs, src/template.rs). Run from fuzz/: python3 make_seed_corpus.py"""
import base64
import hashlib
import html
import json
import urllib.parse
import warnings
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent
SRC = ROOT.parent / "src"
warnings.simplefilter("error", DeprecationWarning)
RAW = re.compile(r'r#"(.*?)"#', re.S)
PLAIN = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


def write(target, data):
    out = ROOT / "corpus" / target
    out.mkdir(parents=True, exist_ok=True)
    (out / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def literals(path):
    text = path.read_text()
    found = RAW.findall(text)
    for s in PLAIN.findall(text):
        try:
            found.append(bytes(s, "utf-8").decode("unicode_escape"))
        except (UnicodeDecodeError, DeprecationWarning):
            pass
    return found


bodies = literals(SRC / "response" / "tests.rs")
heads = [
    "200\ncontent-type: application/json\n\n",
    "400\ncontent-type: application/json\n\n",
    "401\nwww-authenticate: Basic\n\n",
]
for body in bodies:
    if body.lstrip().startswith(("{", "[", "<")) or ("=" in body and " " not in body):
        for head in heads:
            write("response", (head + body).encode())
for head in [
    "201\n\n",
    "200\ncontent-type: application/x-www-form-urlencoded\n\naccess_token=abc&expires_in=60",
    "429\nretry-after: 30\n\n",
    "503\ncontent-type: text/html\nretry-after: Wed, 15 Nov 2023 00:13:20 GMT\n\n<html>down</html>",
    "302\nlocation: https://elsewhere.example/token\n\n",
]:
    write("response", head.encode())
write("response", b"200\n\nfuzz-client-secret-9f8e7d")
write("response", b'400\n\n{"error":"invalid_client","error_description":"bad fuzz-client-secret-9f8e7d"}')
# The harness's secret echoed in the forms an endpoint may use (fuzz_targets/response.rs).
SECRET = "fuzz-client-secret-9f8e7d ~+/=&<x>\"'"
PAIR = "fuzz id/1:" + SECRET
for form in [
    SECRET,
    urllib.parse.quote_plus(SECRET),
    urllib.parse.quote(SECRET, safe="").lower(),
    json.dumps(SECRET)[1:-1],
    html.escape(SECRET),
    base64.b64encode(PAIR.encode()).decode(),
]:
    write("response", ("400\n\n" + json.dumps({"error": "invalid_client", "error_description": "bad " + form})).encode())
    write("response", ("401\ncontent-type: text/html\n\n<html><title>" + html.escape(form) + "</title></html>").encode())
    write("response", ("500\n\n" + "x" * 190 + " " + form + " tail").encode())
    write("response", ("200\n\n" + json.dumps({"access_token": "fuzz-token-value", "error": "x", "error_description": form + " fuzz-token-value"})).encode())

for s in literals(SRC / "duration.rs"):
    if len(s) < 40:
        write("duration", s.encode())
for s in ["90s", "5m", "1h30m", "250ms", "0s", "1h", "24h", "1.5h", "99999999999h"]:
    write("duration", s.encode())

for s in literals(SRC / "template.rs") + [
    "Bearer {{ access_token }}",
    "{{token_type}} {{access_token}}",
    "expires {{ expires_at }} scope {{ scope }}",
    "{{ unknown }}",
    "{{ access_token",
    "}}{{",
]:
    if len(s) < 200:
        write("template", s.encode())

for s in ["30", "0", "120", "Wed, 15 Nov 2023 00:13:20 GMT", "Sun, 06 Nov 1994 08:49:37 GMT",
          "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "soon", "-1",
          "99999999999999999999999", " 5 "]:
    write("retry_after", s.encode())
