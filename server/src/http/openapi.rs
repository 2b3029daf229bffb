//! `GET /api/openapi.json`, generated from the wire types and handlers.

use axum::Json;
use magicauth::wire::{
    ErrorBody, ErrorCode, Jwk, JwkSet, SendLinkRequest, SendLinkResponse, User, VerifyTokenRequest, VerifyTokenResponse,
};
use utoipa::OpenApi;

use super::{api, operator};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MagicAuth API",
        description = "Passwordless sign-in: email single-use magic links and verify them.",
    ),
    paths(api::send_link, api::verify_token, operator::jwks, operator::healthz, operator::readyz, operator::metrics),
    components(schemas(SendLinkRequest, SendLinkResponse, VerifyTokenRequest, VerifyTokenResponse, User, ErrorBody, ErrorCode, Jwk, JwkSet)),
    tags((name = "links", description = "Magic links"), (name = "sessions", description = "Session tokens"), (name = "operator", description = "Health and metrics"))
)]
pub struct ApiDoc;

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    Json(doc)
}
