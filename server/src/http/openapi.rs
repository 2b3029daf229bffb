//! `GET /api/openapi.json`, generated from the wire types and handlers.

use axum::Json;
use magicauth::wire::{
    AppInfo, AppInfoResponse, ErrorBody, ErrorCode, Jwk, JwkSet, SendLinkRequest, SendLinkResponse, User,
    VerifyTokenRequest, VerifyTokenResponse,
};
use utoipa::OpenApi;

use super::{api, operator};

#[derive(OpenApi)]
#[openapi(
    modifiers(&AppKeyAuth),
    info(
        title = "MagicAuth API",
        description = "Passwordless sign-in: email single-use magic links and verify them.",
    ),
    paths(api::send_link, api::verify_token, api::app_info, operator::jwks, operator::healthz, operator::readyz, operator::metrics),
    components(schemas(AppInfo, AppInfoResponse, SendLinkRequest, SendLinkResponse, VerifyTokenRequest, VerifyTokenResponse, User, ErrorBody, ErrorCode, Jwk, JwkSet)),
    tags((name = "links", description = "Magic links"), (name = "sessions", description = "Session tokens"), (name = "operator", description = "Health and metrics"))
)]
pub struct ApiDoc;

/// The bearer scheme of `GET /api/app` (the POST endpoints carry the key in the body).
struct AppKeyAuth;

impl utoipa::Modify for AppKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "app_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The app_key (`mk_…`)"))
                    .build(),
            ),
        );
    }
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    Json(doc)
}
