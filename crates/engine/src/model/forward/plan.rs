//! The interventions a job runs: a [`Plan`] turns a batch of prompts into a [`Spec`]. A fixed
//! spec is the simplest; steering with a gate, learned edits and stacks of plans are others.

use crate::error::Result;
use crate::hooks::Spec;
use crate::model::Model;

/// Something that decides the interventions for a batch of prompts (token ids, one per row).
pub trait Plan: Send + Sync {
    fn spec_for(&self, model: &Model, prompts: &[Vec<u32>]) -> Result<Spec>;
    /// [`Plan::spec_for`] where each prompt's subject is known: `subject_last[r]` is the index
    /// in row r's prompt of the last token of its subject's last mention (None where absent).
    /// A gate whose probe was trained there reads it; every other plan ignores it.
    fn spec_for_subjects(
        &self,
        model: &Model,
        prompts: &[Vec<u32>],
        subject_last: &[Option<usize>],
    ) -> Result<Spec> {
        let _ = subject_last;
        self.spec_for(model, prompts)
    }
    /// Whether [`Plan::spec_for_subjects`] reads the subjects' positions, so that a caller
    /// finds them only for a plan that does.
    fn reads_subjects(&self) -> bool {
        false
    }
    /// A short description for reports and capture metadata.
    fn describe(&self) -> String;
}

/// A fixed spec is the simplest plan: the same interventions for every prompt.
impl Plan for Spec {
    fn spec_for(&self, _: &Model, _: &[Vec<u32>]) -> Result<Spec> {
        Ok(self.clone())
    }
    fn describe(&self) -> String {
        if self.is_empty() {
            "none".into()
        } else {
            format!("{} interventions", self.interventions.len())
        }
    }
}
