//! Config reload on SIGHUP: the allowlist, limits and audit channel swapped at once; the keys
//! that need a restart named (compared with the config in force); every reload recorded.

use std::path::Path;

use super::*;

pub(super) async fn reload_on_sighup(app: &App, path: &Path) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; config reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        match Config::load(path) {
            Ok(new) => {
                apply(app, new).await;
                *app.reload_failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
                app.core()
                    .metrics()
                    .config_loaded(std::time::SystemTime::now());
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the config in force");
                app.core().metrics().config_reload_failures.inc();
                *app.reload_failed.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(e.to_string().replace('\n', " "));
            }
        }
    }
}

/// The keys a reload cannot change in a running process (compared with the config in force,
/// which keeps their running values).
pub(super) fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let checks = [
        (
            "discord.guild_ids",
            old.discord.guild_ids != new.discord.guild_ids,
        ),
        (
            "discord.api_base",
            old.discord.api_base != new.discord.api_base,
        ),
        (
            "discord.gateway_url",
            old.discord.gateway_url != new.discord.gateway_url,
        ),
        (
            "tencent.endpoint",
            old.tencent.endpoint != new.tencent.endpoint,
        ),
        // The client routes by product and region as it started.
        (
            "tencent.products",
            old.tencent.products != new.tencent.products,
        ),
        (
            "tencent.lighthouse_regions",
            old.tencent.lighthouse_regions != new.tencent.lighthouse_regions,
        ),
        (
            "tencent.language",
            old.tencent.language != new.tencent.language,
        ),
        (
            "tencent.timeout_secs",
            old.tencent.timeout != new.tencent.timeout,
        ),
        (
            "limits.api_per_second",
            old.limits.api_per_second != new.limits.api_per_second,
        ),
        ("audit.path", old.audit.path != new.audit.path),
        ("audit.ship", old.audit.ship != new.audit.ship),
        (
            "admin.listen",
            old.admin.map(|a| a.listen) != new.admin.map(|a| a.listen),
        ),
        ("log.format", old.log.format != new.log.format),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

/// `new` with every restart-only key at its running value (from `old`, the config in force):
/// what is in force after a reload. So a key set back to its running value is no change, and one
/// left changed keeps warning until the restart.
pub(super) fn keep_running(old: &Config, mut new: Config) -> Config {
    for key in restart_only_changes(old, &new) {
        new.source.keep(&old.source, key);
    }
    // The served servers are where /vnc is registered: that happens at start only. The products
    // and Lighthouse regions are how the Tencent client routes, also fixed at start; so are the
    // client's endpoint, language, timeout and pace, the journal, the admin endpoint and the logs.
    new.discord.guild_ids.clone_from(&old.discord.guild_ids);
    new.discord.api_base.clone_from(&old.discord.api_base);
    new.discord.gateway_url.clone_from(&old.discord.gateway_url);
    new.tencent.endpoint.clone_from(&old.tencent.endpoint);
    new.tencent.products.clone_from(&old.tencent.products);
    new.tencent
        .lighthouse_regions
        .clone_from(&old.tencent.lighthouse_regions);
    new.tencent.language = old.tencent.language;
    new.tencent.timeout = old.tencent.timeout;
    new.limits.api_per_second = old.limits.api_per_second;
    new.audit.path.clone_from(&old.audit.path);
    new.admin = old.admin;
    new.log.format = old.log.format;
    debug_assert!(restart_only_changes(old, &new).is_empty());
    new
}

/// Swaps the allowlist, limits and audit channel at once; says which changes need a restart,
/// logs and records which keys changed.
pub(super) async fn apply(app: &App, new: Config) {
    let (commands_changed, limits_changed, changed, digest) = {
        let mut old = app.config.lock().unwrap_or_else(|e| e.into_inner());
        for key in restart_only_changes(&old, &new) {
            tracing::warn!(
                key,
                "changed in the config file; takes effect only after a restart"
            );
        }
        let new = keep_running(&old, new);
        for warning in new.warnings() {
            tracing::warn!(%warning, "config: {warning}");
        }
        let changed = old.source.changed(&new.source);
        let digest = new.source.digest();
        let commands_changed = old.tencent.regions != new.tencent.regions
            || old.audit.require_reason != new.audit.require_reason;
        let limits_changed = old.limits != new.limits;
        // From here on, records name the new config; `config_reloaded` below says when it came.
        app.core().journal().set_config_digest(digest.clone());
        app.core().reconfigure(
            Policy::from_config(&new),
            limits_changed.then(|| app.core().limits().reconfigured(&new.limits)),
        );
        app.bot
            .audit_feed
            .set_channel(new.discord.audit_channel_id.map(|c| c.get()));
        *old = new;
        (commands_changed, limits_changed, changed, digest)
    };
    tracing::info!(
        limits_changed,
        commands_changed,
        changed = changed.join(","),
        config_digest = digest,
        "config reloaded: allowlist, limits and audit channel swapped"
    );
    let entry = Entry {
        config_digest: Some(digest),
        changed: Some(changed),
        ..Entry::default()
    };
    let actor = Actor::Local {
        user: "vncbot".into(),
    };
    if let Err(e) = app
        .core()
        .journal()
        .append(Event::ConfigReloaded, &actor, entry)
        .await
    {
        tracing::error!(error = %e, "AUDIT WRITE FAILED for the config reload");
    }
    if commands_changed {
        if let Some(http) = app.bot.http() {
            discord::register_commands(&http, &app.bot).await;
        }
    }
}
