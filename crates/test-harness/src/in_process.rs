//! The service built in the test's own process, for the tests that need no process boundary.

use std::path::Path;

use crate::{assert_not_ready_because, http_get, metric_sum};

/// The service built in this process ([`App::build`](auth0_default_roles::app::App::build),
/// then [`spawn`](auth0_default_roles::app::App::spawn)) on a runtime of the test's, for the
/// tests that need no process boundary (no signal, no exit status, no CLI output). The
/// configuration is text whose secrets come from `env`, never the process environment;
/// `listen` addresses with port 0 get ports the system picks ([`InProcessApp::ingest_port`],
/// [`InProcessApp::metrics_port`]). Dropped without [`InProcessApp::stop`], it is asked to
/// stop and drains on its runtime.
pub struct InProcessApp {
    runtime: tokio::runtime::Handle,
    running: Option<auth0_default_roles::app::RunningApp>,
}

impl InProcessApp {
    /// Builds and starts `command` from `config` (TOML text); panics with the start error's
    /// whole cause chain.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        config: &str,
        command: auth0_default_roles::app::Command,
        env: &[(&str, &str)],
    ) -> InProcessApp {
        use auth0_default_roles::app::App;
        use auth0_default_roles::config::Config;
        use auth0_default_roles::exit::cause_chain;
        use auth0_default_roles::shutdown::Shutdown;
        let lookup = |name: &str| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        let config = Config::from_toml(config, Path::new("in-process.toml"), &lookup)
            .unwrap_or_else(|e| panic!("config: {}", cause_chain(&e)));
        let running = runtime.block_on(async {
            App::build(&config, command, Shutdown::new())
                .await
                .map(App::spawn)
                .unwrap_or_else(|e| panic!("start: {}", cause_chain(&e)))
        });
        InProcessApp {
            runtime: runtime.handle().clone(),
            running: Some(running),
        }
    }

    fn running(&self) -> &auth0_default_roles::app::RunningApp {
        self.running
            .as_ref()
            .unwrap_or_else(|| panic!("the application was stopped"))
    }

    /// The webhook receiver's port (`ingest`).
    pub fn ingest_port(&self) -> u16 {
        self.running()
            .ingest_addr()
            .map(|addr| addr.port())
            .unwrap_or_else(|| panic!("not an ingest application"))
    }

    /// The port of `/metrics`, `/healthz` and `/readyz`.
    pub fn metrics_port(&self) -> u16 {
        self.running().metrics_addr().port()
    }

    /// `GET path` on the metrics port: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_port(), path)
    }

    /// The value of one metric line, as [`Service::metric`](crate::Service::metric).
    pub fn metric(&self, name: &str, label_filter: &str) -> f64 {
        let body = self.get("/metrics").map(|(_, b)| b).unwrap_or_default();
        metric_sum(&body, name, label_filter)
    }

    /// As [`Service::assert_not_ready_because`](crate::Service::assert_not_ready_because).
    pub fn assert_not_ready_because(&self, reason: &str) {
        assert_not_ready_because(self.metrics_port(), reason);
    }

    /// Stops it as SIGTERM does and gives what its run returned.
    pub fn stop(mut self) -> Result<(), auth0_default_roles::app::StartError> {
        match self.running.take() {
            Some(running) => self.runtime.block_on(running.stop()),
            None => Ok(()),
        }
    }
}

impl Drop for InProcessApp {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.trigger_stop();
        }
    }
}
