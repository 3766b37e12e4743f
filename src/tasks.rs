//! Lifecycle tasks (deploy, undeploy, redeploy, purge): what the API answers with 202 and what
//! `GET /api/v1/status/tasks/{id}` follows to succeeded or failed.
//!
//! A task is queued by the API, marked running when a worker starts reconciling its challenge,
//! and finished by that reconcile's result. The board keeps the last [`KEEP`] tasks in memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::status::now_rfc3339;

/// How many finished tasks are remembered.
pub const KEEP: usize = 1000;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

/// One lifecycle action on one challenge.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub challenge: String,
    pub action: String,
    pub state: TaskState,
    pub message: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

#[derive(Default)]
struct Inner {
    tasks: BTreeMap<String, Task>,
    order: VecDeque<String>,
}

/// All tasks. Cheap to clone.
#[derive(Clone, Default)]
pub struct TaskBoard {
    inner: Arc<Mutex<Inner>>,
    next: Arc<AtomicU64>,
}

impl TaskBoard {
    pub fn new() -> TaskBoard {
        TaskBoard::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a task.
    pub fn create(&self, challenge: &str, action: &str) -> Task {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let task = Task {
            id: format!("t-{n}"),
            challenge: challenge.to_string(),
            action: action.to_string(),
            state: TaskState::Queued,
            message: String::new(),
            created_at: now_rfc3339(),
            finished_at: None,
        };
        let mut inner = self.lock();
        inner.tasks.insert(task.id.clone(), task.clone());
        inner.order.push_back(task.id.clone());
        while inner.order.len() > KEEP {
            if let Some(old) = inner.order.pop_front() {
                inner.tasks.remove(&old);
            }
        }
        task
    }

    pub fn get(&self, id: &str) -> Option<Task> {
        self.lock().tasks.get(id).cloned()
    }

    /// A worker starts on `challenge`: its queued tasks are now running.
    pub fn start(&self, challenge: &str) {
        for t in self.lock().tasks.values_mut() {
            if t.challenge == challenge && t.state == TaskState::Queued {
                t.state = TaskState::Running;
            }
        }
    }

    /// The reconcile of `challenge` ended: its running tasks succeed or fail with `result`.
    /// Returns the tasks it finished.
    pub fn finish(&self, challenge: &str, result: &Result<(), String>) -> Vec<Task> {
        let mut done = Vec::new();
        for t in self.lock().tasks.values_mut() {
            if t.challenge == challenge && t.state == TaskState::Running {
                match result {
                    Ok(()) => {
                        t.state = TaskState::Succeeded;
                        t.message = format!("{} of {} done", t.action, t.challenge);
                    }
                    Err(err) => {
                        t.state = TaskState::Failed;
                        t.message = err.clone();
                    }
                }
                t.finished_at = Some(now_rfc3339());
                done.push(t.clone());
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_move_from_queued_to_a_verdict() {
        let board = TaskBoard::new();
        let a = board.create("x", "undeploy");
        assert_eq!(a.state, TaskState::Queued);
        board.start("x");
        let late = board.create("x", "deploy");
        let done = board.finish("x", &Ok(()));
        assert_eq!(done.len(), 1);
        assert_eq!(
            board.get(&a.id).map(|t| t.state),
            Some(TaskState::Succeeded)
        );
        // Queued after the run started: it belongs to the next run.
        assert_eq!(
            board.get(&late.id).map(|t| t.state),
            Some(TaskState::Queued)
        );
        board.start("x");
        board.finish("x", &Err("boom".into()));
        let late = board.get(&late.id);
        assert_eq!(late.as_ref().map(|t| t.state), Some(TaskState::Failed));
        assert_eq!(late.map(|t| t.message), Some("boom".to_string()));
    }

    #[test]
    fn ids_are_unique_and_old_tasks_are_forgotten() {
        let board = TaskBoard::new();
        let first = board.create("x", "deploy");
        for _ in 0..KEEP {
            board.create("x", "deploy");
        }
        assert!(board.get(&first.id).is_none());
    }
}
