//! STUB: replaced by the egress module (iptables DOCKER-USER rules).
use std::collections::BTreeMap;
use std::path::Path;

pub struct Egress {
    reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress control unavailable: {0}")]
    Unavailable(String),
}

impl Egress {
    pub async fn detect(_instance: &str, _iptables: &Path) -> Egress {
        Egress {
            reason: Some("stub".into()),
        }
    }
    pub fn available(&self) -> Result<(), String> {
        match &self.reason {
            Some(r) => Err(r.clone()),
            None => Ok(()),
        }
    }
    pub async fn block(&self, _challenge: &str, _subnet: &str) -> Result<(), EgressError> {
        Ok(())
    }
    pub async fn allow(&self, _challenge: &str) -> Result<(), EgressError> {
        Ok(())
    }
    pub async fn sync(&self, _wanted: &BTreeMap<String, String>) -> Result<(), EgressError> {
        Ok(())
    }
}
