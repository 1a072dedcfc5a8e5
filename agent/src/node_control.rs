//! The agent's side of [`NodeControl`]: what runtimes may change of this node (a docker
//! deploy's tags, a notify event), done through the cluster handle the control API uses.

use std::path::PathBuf;

use rumor_handlers::node_control::ControlFuture;
use rumor_handlers::{NodeControl, Tags};

use crate::cluster::ClusterHandle;

/// The cluster handle, narrowed to what a runtime may do.
pub struct ClusterNodeControl {
    pub cluster: ClusterHandle,
    /// Where runtimes keep their records: `DATA_DIR/runtimes`.
    pub state_dir: PathBuf,
}

impl NodeControl for ClusterNodeControl {
    fn update_tags(&self, set: Tags, delete: Vec<String>) -> ControlFuture<'_> {
        Box::pin(async move {
            self.cluster
                .update_tags(set, delete)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn send_event(&self, name: String, payload: Vec<u8>) -> ControlFuture<'_> {
        Box::pin(async move {
            self.cluster
                .send_event(name, payload, false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }
}
