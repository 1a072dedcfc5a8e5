//! The plugin endpoints: `GET /v1/plugins`, `GET /v1/plugins/catalog`, `GET /v1/plugin`,
//! `POST /v1/plugin/install`, `/set` and `/remove`.
//!
//! A change is made in the plugin directory first (checked in full, or refused with nothing
//! changed), then applied by the agent's reload, whose report comes back with the answer.

use hyper::StatusCode;
use tokio::sync::oneshot;

use super::api::{
    CatalogEntry, CatalogResponse, PluginChangeResponse, PluginInfoResponse, PluginInstallRequest,
    PluginRemoveRequest, PluginSetRequest, PluginsResponse, SettingInfo, parse_query,
};
use super::context::ControlContext;
use super::reply::{ApiError, Reply, error, json};
use crate::plugin::{PluginError, Source, catalog, load};

/// `GET /v1/plugins`.
pub(super) fn list(ctx: &ControlContext) -> Result<Reply, ApiError> {
    Ok(json(
        StatusCode::OK,
        &PluginsResponse {
            plugins: ctx.plugins.status(),
        },
    ))
}

/// `GET /v1/plugins/catalog`: the built-in plugins.
pub(super) fn available(ctx: &ControlContext) -> Result<Reply, ApiError> {
    let installed = ctx.plugins.status();
    let plugins = catalog::names()
        .into_iter()
        .filter_map(|name| {
            let manifest = catalog::manifest(name).ok()?;
            Some(CatalogEntry {
                installed: installed.iter().any(|p| p.name == name),
                name: manifest.name,
                version: manifest.version,
                description: manifest.description,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &CatalogResponse { plugins }))
}

/// `GET /v1/plugin?name=NAME`.
pub(super) fn info(ctx: &ControlContext, query: &str) -> Result<Reply, ApiError> {
    let name = parse_query(query)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?
        .into_iter()
        .find_map(|(k, v)| (k == "name").then_some(v))
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "give the plugin: ?name=NAME"))?;
    let plugin = ctx.plugins.get(&name).ok_or_else(|| {
        plugin_error(PluginError::NotFound(format!(
            "plugin {name:?} is not installed (`rumor plugin list` shows what is)"
        )))
    })?;
    let dir = ctx.plugins.dir().folder(&name).map_err(plugin_error)?;
    let manifest = load::read_manifest(&dir).ok().map(|(m, _)| m);
    let given = load::read_given(&dir).unwrap_or_default();
    let settings = manifest
        .map(|m| {
            m.settings
                .iter()
                .map(|(key, spec)| SettingInfo {
                    name: key.clone(),
                    kind: spec.kind.as_str().to_string(),
                    value: plugin.settings.get(key).cloned(),
                    given: given.contains_key(key),
                    default: spec.default.as_ref().map(|d| match d {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                    required: spec.required,
                    help: spec.help.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let handlers = ctx
        .handlers
        .status()
        .into_iter()
        .filter(|h| plugin.handlers.contains(&h.name))
        .collect();
    Ok(json(
        StatusCode::OK,
        &PluginInfoResponse {
            plugin,
            settings,
            handlers,
        },
    ))
}

/// `POST /v1/plugin/install`.
pub(super) async fn install(
    ctx: &ControlContext,
    request: PluginInstallRequest,
) -> Result<Reply, ApiError> {
    let plugins = ctx.plugins.clone();
    let loaded = blocking(move || {
        let source = Source::parse(&request.source)?;
        plugins
            .dir()
            .install(&source, &request.set, &plugins.trusted())
    })
    .await?;
    applied(ctx, Some(loaded.manifest.name)).await
}

/// `POST /v1/plugin/set`.
pub(super) async fn set(
    ctx: &ControlContext,
    request: PluginSetRequest,
) -> Result<Reply, ApiError> {
    if request.set.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "no setting given: rumor plugin set NAME KEY=VALUE...",
        ));
    }
    let plugins = ctx.plugins.clone();
    let name = request.name.clone();
    blocking(move || {
        plugins
            .dir()
            .set(&request.name, &request.set, &plugins.trusted())
    })
    .await?;
    applied(ctx, Some(name)).await
}

/// `POST /v1/plugin/remove`.
pub(super) async fn remove(
    ctx: &ControlContext,
    request: PluginRemoveRequest,
) -> Result<Reply, ApiError> {
    let plugins = ctx.plugins.clone();
    blocking(move || plugins.dir().remove(&request.name)).await?;
    applied(ctx, None).await
}

/// Has the agent reload, and answers with the plugin as it now runs.
async fn applied(ctx: &ControlContext, name: Option<String>) -> Result<Reply, ApiError> {
    let (tx, rx) = oneshot::channel();
    let stopping = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        )
    };
    ctx.reload.send(tx).await.map_err(|_| stopping())?;
    let (reload, reload_ok) = match rx.await.map_err(|_| stopping())? {
        Ok(message) => (message, true),
        Err(message) => (message, false),
    };
    Ok(json(
        StatusCode::OK,
        &PluginChangeResponse {
            plugin: name.and_then(|n| ctx.plugins.get(&n)),
            reload,
            reload_ok,
        },
    ))
}

/// Runs file system work off the control API's thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PluginError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(plugin_error)
}

fn plugin_error(e: PluginError) -> ApiError {
    let status = match e {
        PluginError::NotFound(_) => StatusCode::NOT_FOUND,
        PluginError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}
