//! The operator side of [`api::Control`]: what API handlers may ask of the reconcile loop
//! (enqueue a challenge, request a redeploy, stream container output).

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;

use crate::api::{ApiError, Control, LogStream};
use crate::queue::WorkQueue;
use crate::reconcile::Reconciler;
use crate::runtime::Runtime;

/// Hands API requests to the reconciler and its queue.
pub struct OperatorControl<R: Runtime> {
    pub reconciler: Arc<Reconciler<R>>,
    pub queue: WorkQueue<String>,
}

impl<R: Runtime> Control for OperatorControl<R> {
    fn enqueue(&self, name: &str) {
        self.queue.add_now_ignoring_backoff(name.to_string());
    }

    fn redeploy(&self, name: &str) {
        self.reconciler.request_redeploy(name);
    }

    fn build_log(&self, name: &str) -> Vec<String> {
        self.reconciler.build_log(name)
    }

    fn logs(
        &self,
        name: &str,
        replica: Option<u32>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'static, Result<LogStream, ApiError>> {
        let containers: Vec<(String, String)> = self
            .reconciler
            .status
            .get(name)
            .map(|s| s.containers)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| replica.is_none_or(|r| r == c.replica))
            .map(|c| (c.id, c.name))
            .collect();
        let runtime = self.reconciler.runtime.clone();
        let name = name.to_string();
        Box::pin(async move {
            if containers.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "challenge {name:?} has no container{}",
                    replica
                        .map(|r| format!(" for replica {r}"))
                        .unwrap_or_default()
                )));
            }
            let prefixed = containers.len() > 1;
            let streams = containers.into_iter().map(|(id, cname)| {
                runtime
                    .log_stream(&id, tail, follow)
                    .map(move |chunk| match chunk {
                        Ok(bytes) if prefixed => Ok(prefix_lines(&cname, &bytes)),
                        Ok(bytes) => Ok(bytes),
                        Err(err) => Err(std::io::Error::other(err.to_string())),
                    })
                    .boxed()
            });
            Ok(futures::stream::select_all(streams).boxed())
        })
    }
}

/// `[name] ` before every line of a chunk (one chunk is one or more whole lines).
fn prefix_lines(name: &str, bytes: &[u8]) -> bytes::Bytes {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        out.push('[');
        out.push_str(name);
        out.push_str("] ");
        out.push_str(line);
    }
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_with_the_container() {
        assert_eq!(&prefix_lines("c_1", b"a\nb\n")[..], b"[c_1] a\n[c_1] b\n");
    }
}
