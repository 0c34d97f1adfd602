//! `data`, `label` and `capture`.

use super::*;
use anyhow::{bail, Result};
use ctxsteer::{Site, WeightsMode};

pub(super) fn data_cmd(d: DataCmd) -> Result<()> {
    match d {
        DataCmd::Build { out } => {
            for (name, n) in ctxsteer::data::write_built(&out)? {
                println!("{:>6} items  {}", n, out.join(name).display());
            }
        }
        DataCmd::Irrelevant { data, kinds, out } => {
            ctxsteer::atomic::check_not_input(&out, &[&data])?;
            let (items, _) = ctxsteer::data::read_jsonl(&data, false)?;
            let irr = ctxsteer::data::irrelevant_for(&items, &kinds);
            if irr.is_empty() {
                bail!(
                    "{}: no conflict has another subject of its split whose sentence fits \
                     (it must not name the query's subject or answers)",
                    data.display()
                );
            }
            ctxsteer::data::write_jsonl(&out, &irr)?;
            println!("{} items  {}", irr.len(), out.display());
        }
        DataCmd::Import { format, file, out } => {
            ctxsteer::atomic::check_not_input(&out, &[&file])?;
            let items = ctxsteer::data::import(format, &file)?;
            ctxsteer::data::write_jsonl(&out, &items)?;
            println!("{} items  {}", items.len(), out.display());
        }
    }
    Ok(())
}

pub(super) fn label_cmd(a: LabelArgs) -> Result<()> {
    let items = a.data.read()?;
    // Refused now, not after the whole labelling run.
    ctxsteer::atomic::check_not_input(&a.out, &[&a.data.data])?;
    ctxsteer::atomic::check_target(&a.out)?;
    let _lock = ctxsteer::atomic::OutputLock::acquire(&a.out, false)?;
    let model = a.model.load_or(WeightsMode::F32)?;
    let mut opts = ctxsteer::label::LabelOptions::new(a.data.form);
    opts.batch_size = a.data.batch_size;
    opts.proxy = a.proxy.load(&a.model, &model)?;
    let pb = ctxsteer::progress::bar(items.len() as u64, "label", false);
    let plan = a.steer.plan(&model)?;
    let labels = ctxsteer::label::label_items(&model, &items, &opts, plan.as_ref(), &mut |n| {
        pb.inc(n as u64);
        Ok(())
    })?;
    pb.finish_and_clear();
    ctxsteer::data::write_jsonl(&a.out, &labels)?;
    let (all, per) = ctxsteer::label::summarize(&labels);
    if a.json {
        let v = serde_json::json!({"overall": all, "per_relation": per, "labels": a.out});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", ctxsteer::label::summary_table(&all, &per));
        println!("labels written to {}", a.out.display());
    }
    Ok(())
}

/// The labels file of a capture, by id; an error when it labels none of the items, a warning
/// when it misses some.
fn capture_labels(
    p: &std::path::Path,
    items: &[ctxsteer::data::Item],
) -> Result<std::collections::HashMap<String, ctxsteer::label::ItemLabel>> {
    let map: std::collections::HashMap<_, _> = ctxsteer::label::read_labels(p)?
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect();
    let missing = items.iter().filter(|it| !map.contains_key(&it.id)).count();
    if missing == items.len() {
        bail!(
            "--labels {}: none of the {} items has a label there (the ids differ: label the same data file first)",
            p.display(),
            items.len()
        );
    }
    if missing > 0 {
        eprintln!(
            "warning: {missing} of {} items have no label in {}; their label fields stay empty",
            items.len(),
            p.display()
        );
    }
    Ok(map)
}

pub(super) fn capture_cmd(a: CaptureArgs) -> Result<()> {
    let items = a.data.read()?;
    let _lock = ctxsteer::atomic::OutputLock::acquire(&a.out, true)?;
    let model = a.model.load_or(WeightsMode::F32)?;
    let sites = Site::parse_pattern(&a.sites, model.cfg().n_layers)?;
    let labels = match &a.labels {
        Some(p) => Some(capture_labels(p, &items)?),
        None => None,
    };
    let plan = a.steer.plan(&model)?;
    let opts = ctxsteer::capture::CaptureOptions {
        sites: sites.clone(),
        positions: a.positions,
        form: a.data.form,
        with_context: !a.closed_book,
        batch_size: a.data.batch_size,
        shard_size: a.shard_size.max(1),
    };
    let meta = ctxsteer::capture::CaptureMeta::new(
        &model,
        a.data.data.display().to_string(),
        &items,
        &opts,
        Some(plan.describe()).filter(|d| d != "none"),
        a.labels.as_ref().map(|p| p.display().to_string()),
    )?;
    let pb = ctxsteer::progress::bar(items.len() as u64, "capture", false);
    let t0 = std::time::Instant::now();
    let meta = ctxsteer::capture::capture(
        &model,
        &items,
        labels.as_ref(),
        &opts,
        plan.as_ref(),
        meta,
        &a.out,
        &mut |n| pb.inc(n as u64),
    )?;
    pb.finish_and_clear();
    println!(
        "captured {} items x {} sites in {:.1}s into {}",
        meta.n_items,
        meta.sites.len(),
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
