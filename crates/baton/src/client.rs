//! The HTTP client of the Baton API used by every subcommand but `server`.
//! It turns transport failures and API error bodies into messages that say
//! what went wrong and where to look.

use anyhow::{anyhow, Result};
use serde::de::DeserializeOwned;

pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.send(self.http.get(self.url(path))).await?;
        decode(response).await
    }

    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        let response = self.send(self.http.post(self.url(path)).json(body)).await?;
        decode(response).await
    }

    pub async fn patch_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        let response = self
            .send(self.http.patch(self.url(path)).json(body))
            .await?;
        decode(response).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.send(self.http.delete(self.url(path))).await?;
        decode(response).await
    }

    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<T> {
        let request = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        let response = self.send(request).await?;
        decode(response).await
    }

    /// A body as bytes (plain-text endpoints).
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let response = self.send(self.http.get(self.url(path))).await?;
        Ok(response.bytes().await?.to_vec())
    }

    /// A response whose body the caller reads as it arrives.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response> {
        self.send(self.http.get(self.url(path))).await
    }

    /// A POST whose answer the caller reads as it arrives.
    pub async fn post_stream(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        // BATON_TOKEN, else the token `baton login` kept for this server,
        // else — for a server on this host — its admin.token if readable.
        let token = std::env::var("BATON_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| crate::accounts::saved_token(&self.base))
            .or_else(|| crate::accounts::admin_token(&self.base));
        let request = match token {
            Some(token) => request.bearer_auth(token.trim()),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            let cause = if e.is_connect() { "connection refused".to_string() } else { e.to_string() };
            anyhow!(
                "cannot reach the Baton server at {} ({cause}); start it with `baton server`, or set BATON_API to its address",
                self.base
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<serde_json::Value>(&text).ok();
        let field = |name: &str| {
            body.as_ref()
                .and_then(|v| v["error"][name].as_str().map(str::to_string))
        };
        Err(ApiFailure {
            code: field("code").unwrap_or_default(),
            message: field("message")
                .unwrap_or_else(|| format!("the server answered {status}: {}", text.trim())),
        }
        .into())
    }
}

/// An error answer of the API, kept typed so a command can act on its code
/// (`already_live`, `unauthorized`, …); shown as its message.
#[derive(Debug)]
pub struct ApiFailure {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// The API error's code, if `error` is one.
pub fn failure_code(error: &anyhow::Error) -> Option<&str> {
    error.downcast_ref::<ApiFailure>().map(|f| f.code.as_str())
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let url = response.url().clone();
    let bytes = response.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("unexpected answer from {url}: {e}"))
}
