//! The argument types shared by the subcommands, and the helpers that turn them into a model,
//! a dataset or a steering plan.

use crate::cli::choice::{choice, choice_or};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

pub use super::model_args::*;
pub use super::numbers::*;
pub use super::steer_args::*;

#[derive(Subcommand)]
pub enum DataCmd {
    /// Write the built-in conflicts (from counterfactual_data/facts) as JSONL into DIR.
    Build {
        /// The folder the JSONL files are written into (counterfactual.jsonl, the variants and
        /// one file per split).
        #[arg(long, default_value = "counterfactual_data")]
        out: PathBuf,
    },
    /// Irrelevant contexts for a file of conflicts: each conflict's query after a context about
    /// another subject of its split (variant `irrelevant`, the distractor as context_answer),
    /// built from the file's own conflicts, as `bench conflict` builds them when its data has
    /// none. Concatenate the output with the conflicts to benchmark or capture them together.
    Irrelevant {
        /// Conflicts in our format.
        #[arg(long)]
        data: PathBuf,
        /// Kinds to build, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            value_parser = choice::<ctxsteer::data::Distractor>(),
            default_value = "same_relation_true,same_relation_false,other_relation,paragraph"
        )]
        kinds: Vec<ctxsteer::data::Distractor>,
        /// The JSONL file written (irrelevant items only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Convert a CounterFact or NQ-Swap file into our JSONL format.
    Import {
        /// The file's format.
        #[arg(long, value_parser = choice::<ctxsteer::data::ImportFormat>())]
        format: ctxsteer::data::ImportFormat,
        /// The file to convert, as published.
        file: PathBuf,
        /// The JSONL file written, in our format.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `probe train`'s arguments.
#[derive(Args)]
pub struct ProbeTrain {
    /// A capture folder from `ctxsteer capture` (with --labels for follows_context/known).
    #[arg(long)]
    pub acts: PathBuf,
    /// What to predict.
    #[arg(long, value_parser = choice::<ctxsteer::probe::Target>(), default_value = "follows-context")]
    pub target: ctxsteer::probe::Target,
    /// Deprecated spelling of --target.
    #[arg(long, hide = true, value_parser = choice::<ctxsteer::probe::Target>())]
    pub label: Option<ctxsteer::probe::Target>,
    /// Only these captured sites (names or patterns).
    #[arg(long)]
    pub sites: Option<String>,
    /// Which linear model each site's probe is.
    #[arg(long, value_parser = choice::<ctxsteer::probe::Kind>(), default_value = "logistic")]
    pub kind: ctxsteer::probe::Kind,
    /// Seed of the subject split and the control task.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Test on these relations (comma-separated) and train on the rest, to measure transfer.
    #[arg(long)]
    pub test_relations: Option<String>,
    /// Probe each attention head's slice of the captured attn.hook_z sites on its own
    /// (sites named blocks.L.attn.hook_z[H]), for the `iti` benchmark method; other sites are
    /// probed whole.
    #[arg(long)]
    pub per_head: bool,
    /// Where to write the probe file (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// Also draw accuracy and AUROC by layer into this SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Subcommand)]
pub enum ProbeCmd {
    /// Fit one probe per captured site and save probes, directions and metrics.
    Train(ProbeTrain),
    /// Print a probe file's per-site table.
    Show {
        /// A probe file from `probe train`.
        file: PathBuf,
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
        /// Draw accuracy and AUROC by layer into this SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Use a probe as a detector: one prediction per item.
    Apply {
        /// A probe file from `probe train`.
        file: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// The site to read, or `best`.
        #[arg(long, default_value = "best")]
        site: String,
        /// Read the closed-book prompt instead of context + query.
        #[arg(long)]
        closed_book: bool,
        /// Print one JSON object per item instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Compare methods on a conflict dataset: adherence, M_R, prior retention, fluency.
    Conflict(BenchArgs),
    /// MemoTrap, NQ-Swap and JUICE world capitals from their published files, each with its
    /// own metric, each method's paired difference from none on the same test items, and the
    /// published figures beside ours.
    Public(PublicArgs),
}

#[derive(Args)]
pub struct PublicArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The folder holding memotrap/, nqswap/ and world_capital/ as published (the repository
    /// ships them in benchmarks/; NQ-Swap may be nqswap.jsonl or nqswap.zip holding it).
    #[arg(long, default_value = "benchmarks")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub with: MethodArgs,
    /// Which benchmarks.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "memotrap,nqswap,world_capital",
        value_parser = choice::<ctxsteer::public::Benchmark>()
    )]
    pub benchmarks: Vec<ctxsteer::public::Benchmark>,
    /// At most N items per benchmark (a seeded sample that keeps a subject's items together).
    #[arg(long, value_parser = at_least_one)]
    pub limit: Option<usize>,
    /// Seed of the sample and of the dev/test split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// At most N dev items (a seeded sample) for choosing each method's strength; 0: all.
    /// Test always keeps every item of the run.
    #[arg(long, default_value_t = 200)]
    pub dev_limit: usize,
    /// NQ-Swap only: put K worked examples (context, question, answer) before every query, the
    /// K dev items with the shortest prompts, which then leave dev. 0: zero-shot.
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Go on where an interrupted run stopped: reuse the finished (benchmark, method) parts in
    /// OUT/parts whose settings match, and, inside a method, the item runs already saved in
    /// OUT/parts/BENCHMARK.runs.jsonl (saved batch by batch). Without it both start afresh.
    #[arg(long)]
    pub resume: bool,
    /// Write the report from what OUT/parts holds, running nothing: methods without a saved
    /// part, and benchmarks whose closed-book split pass is not in the journal, are listed as
    /// not run yet. Implies --resume. For a look at a run still under way.
    #[arg(long)]
    pub saved_only: bool,
    /// Rows per batch (batches of long prompts are also capped at 4,096 padded tokens).
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub batch_size: usize,
    #[command(flatten)]
    pub split: SplitArg,
    /// Output folder: report.json, report.md, report.html with its charts, and parts/ (each
    /// finished method's part and each benchmark's journal, which --resume reads).
    #[arg(long)]
    pub out: PathBuf,
}

/// `--split` of `bench conflict` and `bench public`.
#[derive(Args)]
pub struct SplitArg {
    /// Where each method's chosen setting is measured. `test`: dev chooses, test measures, once.
    /// `dev`: test is left unseen; dev's subjects are halved again, one half chooses and the
    /// other measures (the report says so): for developing a method or a setting without
    /// looking at test.
    #[arg(long = "split", value_parser = choice::<ctxsteer::data::Split>(), default_value = "test")]
    pub measure_on: ctxsteer::data::Split,
}

impl SplitArg {
    /// Refuse `--split train` before the model loads.
    pub fn check(&self) -> Result<()> {
        if self.measure_on == ctxsteer::data::Split::Train {
            bail!(
                "--split train: a benchmark measures on test (dev chooses) or within dev (test \
                 unseen); the train split is what the probes and edits were trained on"
            );
        }
        Ok(())
    }
}

/// The methods of a benchmark run and the artefacts they use (bench conflict, bench public).
#[derive(Args)]
pub struct MethodArgs {
    /// Methods, comma-separated (default: none, instruct, cad and adacad, and every method whose
    /// artefacts are given by the options below or found in --artefacts).
    #[arg(long, value_delimiter = ',', value_parser = choice::<ctxsteer::bench::Method>())]
    pub methods: Option<Vec<ctxsteer::bench::Method>>,
    /// A folder of artefacts for one model: its manifest.json names the probe file, gate, head
    /// ranking and trained edits, and is used when its model_sha256 is the loaded model's.
    /// Options given on the command line take precedence.
    #[arg(long, default_value = "probes")]
    pub artefacts: PathBuf,
    /// Artefacts the methods sweep, comma-separated or repeated, told apart by their
    /// contents: a probe file (`probe train`; methods steer, steer-gated, steer-multi and
    /// clamp, the last two at every layer of a band, so it needs one probe per layer), a
    /// per-head probe file (`probe train --per-head` on an attn.hook_z capture; method iti) or
    /// learned edits (`reft train`; the dev sweep of reft, reft-cad and reft-gated chooses
    /// among them).
    #[arg(long, value_delimiter = ',', value_name = "FILE")]
    pub steer: Vec<PathBuf>,
    /// The gates, comma-separated or repeated, told apart by their target: a `conflict` probe
    /// file (`probe train --target conflict` on captured variants), the gate of heads-gated and
    /// reft-gated; and optionally a `relevant` one (`--target relevant`), with which every
    /// setting of reft-gated's sweep runs the edit only where both gates fire. Each gate reads
    /// its probe file's best site, or SITE when written FILE:SITE (so may a manifest's gates).
    #[arg(long, value_delimiter = ',', value_name = "FILE[:SITE]")]
    pub gate: Vec<PathBuf>,
    /// Head ranking for heads and heads-gated: patch.json from `patch --sites heads --ablate`.
    #[arg(long)]
    pub heads_from: Option<PathBuf>,
    /// Deprecated spelling of --steer PROBES.
    #[arg(long, hide = true)]
    pub probes: Option<PathBuf>,
    /// Deprecated spelling of --steer HEAD_PROBES.
    #[arg(long, hide = true)]
    pub head_probes: Option<PathBuf>,
    /// Deprecated spelling of --gate.
    #[arg(long, hide = true)]
    pub gate_probes: Option<PathBuf>,
    /// Deprecated spelling of --steer EDIT,EDIT.
    #[arg(long, value_delimiter = ',', hide = true)]
    pub reft: Vec<PathBuf>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Conflicts in our format; its `split` field picks dev (sweeps) and test (measurement),
    /// else half and half by subject. Items of the train split are not used.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub with: MethodArgs,
    /// How queries are put: completion text, or a chat question.
    #[arg(long, value_parser = choice::<ctxsteer::data::Form>(), default_value = "completion")]
    pub form: ctxsteer::data::Form,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub batch_size: usize,
    /// Skip malformed lines (and report how many) instead of stopping at the first one.
    #[arg(long)]
    pub skip_invalid: bool,
    #[command(flatten)]
    pub split: SplitArg,
    /// About N items (whole subjects, a seeded sample, as `bench public --limit`), before the
    /// dev/test split.
    #[arg(long, value_parser = at_least_one)]
    pub limit: Option<usize>,
    /// Seed of the --limit sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Go on where an interrupted run stopped: reuse the item runs saved in
    /// OUT/parts/conflict.runs.jsonl (saved batch by batch) by an earlier run on the same model,
    /// weights, form and items. A setting added since (a new method, another edit) runs; the
    /// rest come back from the journal. Without it a journal that holds runs is refused.
    #[arg(long)]
    pub resume: bool,
    /// Output folder: report.json, report.md, report.html with its charts, and parts/ (the
    /// journal that --resume reads).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct PatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// The run whose activations are copied.
    #[arg(long, value_parser = choice::<ctxsteer::patch::Variant>(), default_value = "true-context")]
    pub source: ctxsteer::patch::Variant,
    /// The run that receives them.
    #[arg(long, value_parser = choice::<ctxsteer::patch::Variant>(), default_value = "counterfactual")]
    pub target: ctxsteer::patch::Variant,
    /// Which sites are patched, one at a time, at every layer.
    #[arg(long, value_parser = choice::<ctxsteer::patch::PatchSites>(), default_value = "resid-post")]
    pub sites: ctxsteer::patch::PatchSites,
    /// Which positions: every shared query token, the subject's last token, or the last token
    /// (`subject-last` and `last` as in `capture --positions`; `subject` is its earlier name).
    #[arg(long, value_parser = choice_or::<ctxsteer::patch::PatchPositions>(&[("subject", "subject-last")]), default_value = "last")]
    pub positions: ctxsteer::patch::PatchPositions,
    /// With --positions all: at most this many query tokens from the end.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    pub max_positions: usize,
    /// With --sites heads: rank heads by zero-ablating each at the last position of the
    /// target prompt (change in logit(context) - logit(prior)) instead of patching.
    #[arg(long)]
    pub ablate: bool,
    /// Output folder for patch.json and heatmap.svg.
    #[arg(long)]
    pub out: PathBuf,
    /// Also print patch.json to standard output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DensityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Labels from `ctxsteer label`: add the known/unknown condition and the correlations with
    /// prior strength and with following the prior.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Sites for the unit metrics (resid_post at the same layers gives the participation ratio).
    #[arg(long, default_value = "blocks.*.mlp.hook_post")]
    pub sites: String,
    /// A unit counts as active when |a| > tau times its RMS over a calibration set.
    #[arg(long, default_value_t = ctxsteer::density::DEFAULT_TAU, value_parser = positive_f32)]
    pub tau: f32,
    /// Output folder: items.jsonl, density.json and one SVG per metric.
    #[arg(long)]
    pub out: PathBuf,
    /// Also print density.json to standard output.
    #[arg(long)]
    pub json: bool,
}

/// Options shared by the commands that read a dataset.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// A JSONL file of conflicts (see counterfactual_data/).
    #[arg(long)]
    pub data: PathBuf,
    /// Skip malformed lines (and report how many) instead of stopping at the first one.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Use only the first N items.
    #[arg(long, value_parser = at_least_one)]
    pub limit: Option<usize>,
    /// Keep only items of this split, when the data has splits.
    #[arg(long, value_parser = choice::<ctxsteer::data::Split>())]
    pub split: Option<ctxsteer::data::Split>,
    /// How queries are put: completion text, or a chat question.
    #[arg(long, value_parser = choice::<ctxsteer::data::Form>(), default_value = "completion")]
    pub form: ctxsteer::data::Form,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub batch_size: usize,
}

impl DataArgs {
    pub fn read(&self) -> Result<Vec<ctxsteer::data::Item>> {
        let (mut items, skipped) = ctxsteer::data::read_jsonl(&self.data, self.skip_invalid)?;
        if skipped > 0 {
            eprintln!(
                "skipped {skipped} invalid line(s) of {}",
                self.data.display()
            );
        }
        if let Some(s) = self.split {
            items.retain(|i| i.split == Some(s));
            if items.is_empty() {
                bail!("{}: no items in split `{}`", self.data.display(), s.name());
            }
        }
        if let Some(n) = self.limit {
            items.truncate(n);
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        Ok(items)
    }
}

#[derive(Args)]
pub struct LabelArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write one JSON label per item.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub steer: SteerArgs,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Labels from `ctxsteer label`, copied into the index.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Sites: names or patterns, comma-separated (blocks.*.hook_resid_post, blocks.10-20.hook_mlp_out).
    #[arg(long, default_value = "blocks.*.hook_resid_post")]
    pub sites: String,
    /// Which position of each prompt to record.
    #[arg(long, value_parser = choice::<ctxsteer::capture::PosMode>(), default_value = "last")]
    pub positions: ctxsteer::capture::PosMode,
    /// Capture the closed-book prompt instead of context + query.
    #[arg(long)]
    pub closed_book: bool,
    /// Items per shard file.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    pub shard_size: usize,
    /// Output folder; rerunning the same command resumes an interrupted capture.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub steer: SteerArgs,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// At most this many new tokens (generation also stops at the end-of-text token).
    #[arg(long, default_value_t = 48, value_parser = at_least_one)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 (the default) is greedy.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f32)]
    pub temperature: f32,
    /// Nucleus sampling mass, with --temperature > 0.
    #[arg(long, default_value_t = 0.9, value_parser = probability)]
    pub top_p: f32,
    /// Seed of the sampler, with --temperature > 0.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Print the spec that the other options build for this prompt (JSON, readable by --spec)
    /// and exit without generating.
    #[arg(long)]
    pub print_spec: bool,
    /// Deprecated spelling of --steer FILE:SITE (a raw vector).
    #[arg(long, requires = "steer_site", hide = true)]
    pub steer_vector: Option<PathBuf>,
    /// Deprecated: the SITE of --steer FILE:SITE.
    #[arg(long, requires = "steer_vector", hide = true)]
    pub steer_site: Option<String>,
    /// Deprecated: the --alpha of a raw vector.
    #[arg(long, allow_hyphen_values = true, value_parser = finite_f32, hide = true)]
    pub steer_alpha: Option<f32>,
    #[command(flatten)]
    pub plan: SteerArgs,
    /// plain decoding, or context-aware decoding with --context (greedy): cad (Shi et al. 2023,
    /// a fixed --cad-beta) or adacad (beta at each step = the Jensen-Shannon divergence between
    /// the next-token distributions with and without the context, Wang et al. 2024).
    #[arg(long, value_enum, default_value = "plain")]
    pub decoding: Decoding,
    /// The context for CAD: the prompt is `{context} {prompt}`, contrasted with the prompt alone.
    #[arg(long)]
    pub context: Option<String>,
    /// CAD strength: logits = (1+beta)*with - beta*without (cad only).
    #[arg(long, default_value_t = 0.5, value_parser = non_negative_f32)]
    pub cad_beta: f32,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Decoding {
    Plain,
    Cad,
    Adacad,
}
