//! AWS Signature Version 4 in the query string, for S3 upload URLs that fix their body's size.
//!
//! `object_store` presigns over `host` and the headers it is given, but leaves `content-length`
//! out of every signature it makes. An upload URL has to sign it: S3 (and Garage) then refuse a
//! body of any other size, so a URL cannot store more than the upload declared.

use std::{fmt::Write, time::Duration};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use object_store::aws::AwsCredential;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use url::Url;

/// What SigV4 leaves unescaped: letters, digits and `-_.~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn uri_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// A request to presign: `method` on `url` (the object's address, without a query), signed over
/// `host` and `headers` (lower-case names), valid for `expires_in` from `now`.
pub(crate) struct Presign<'a> {
    pub method: &'a str,
    pub url: Url,
    pub headers: &'a [(&'a str, String)],
    pub credential: &'a AwsCredential,
    pub region: &'a str,
    pub expires_in: Duration,
    pub now: DateTime<Utc>,
}

impl Presign<'_> {
    /// The URL with the signature in its query.
    pub(crate) fn sign(self) -> Url {
        let date = self.now.format("%Y%m%d").to_string();
        let timestamp = self.now.format("%Y%m%dT%H%M%SZ").to_string();
        let scope = format!("{date}/{}/s3/aws4_request", self.region);

        let mut host = self.url.host_str().unwrap_or_default().to_owned();
        if let Some(port) = self.url.port() {
            let _ = write!(host, ":{port}");
        }
        let mut headers: Vec<(&str, &str)> = vec![("host", host.as_str())];
        headers.extend(self.headers.iter().map(|(n, v)| (*n, v.as_str())));
        headers.sort();
        let signed_headers = headers
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(";");
        let canonical_headers: String = headers
            .iter()
            .map(|(name, value)| format!("{name}:{}\n", value.trim()))
            .collect();

        let mut query = vec![
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_owned()),
            (
                "X-Amz-Credential",
                format!("{}/{scope}", self.credential.key_id),
            ),
            ("X-Amz-Date", timestamp.clone()),
            ("X-Amz-Expires", self.expires_in.as_secs().to_string()),
            ("X-Amz-SignedHeaders", signed_headers.clone()),
        ];
        if let Some(token) = &self.credential.token {
            query.push(("X-Amz-Security-Token", token.clone()));
        }
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(name, value)| format!("{}={}", uri_encode(name), uri_encode(value)))
            .collect::<Vec<_>>()
            .join("&");

        // S3 signs the object's path as it decodes it, each segment escaped once.
        let path = percent_decode_str(self.url.path()).decode_utf8_lossy();
        let canonical_uri = path
            .split('/')
            .map(uri_encode)
            .collect::<Vec<_>>()
            .join("/");
        let canonical_request = format!(
            "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD",
            self.method
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let mut key = hmac(
            format!("AWS4{}", self.credential.secret_key).as_bytes(),
            &date,
        );
        for part in [self.region, "s3", "aws4_request"] {
            key = hmac(&key, part);
        }
        let signature = hex::encode(hmac(&key, &string_to_sign));

        let mut url = self.url;
        url.set_query(Some(&format!(
            "{canonical_query}&X-Amz-Signature={signature}"
        )));
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credential() -> AwsCredential {
        // The example credentials of AWS's documentation.
        AwsCredential {
            key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            token: None,
        }
    }

    fn example(method: &str, headers: &[(&str, String)]) -> Url {
        Presign {
            method,
            url: Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap(),
            headers,
            credential: &example_credential(),
            region: "us-east-1",
            expires_in: Duration::from_secs(86400),
            now: DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
        .sign()
    }

    #[test]
    fn signs_the_documented_example() {
        // "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", S3 API
        // reference: a GET of test.txt signed over host alone.
        assert_eq!(
            example("GET", &[]).as_str(),
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn an_upload_url_signs_its_content_length() {
        let length = |n: u64| [("content-length", n.to_string())];
        let ten = example("PUT", &length(10));
        assert!(
            ten.as_str()
                .contains("X-Amz-SignedHeaders=content-length%3Bhost"),
            "{ten}"
        );
        let signature = |url: &Url| {
            url.query_pairs()
                .find(|(k, _)| k == "X-Amz-Signature")
                .map(|(_, v)| v.into_owned())
        };
        assert_ne!(signature(&ten), signature(&example("PUT", &length(11))));
    }
}
