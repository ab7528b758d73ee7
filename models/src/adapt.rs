//! Training an [`Adapter`] on a desk's labelled texts, with candle's
//! autograd on the CPU.
//!
//! Only the top [`AdaptOptions::layers`] layers change, so the shipped lower
//! layers run once per text ([`TrainingSet::prepare`], on this crate's fast
//! forward pass) and their output is kept (as f16); every training step then
//! runs just the top layers in candle, with low-rank updates `B·A` on their six
//! dense layers (`B` starts at zero: step 0 is the shipped encoder).
//!
//! Texts come in *tasks* (e.g. "tickets and phrasings by category" and
//! "phrasings by article"), each text in one group of its task. A batch holds
//! texts of one task, a few per group, and the loss pulls a group together
//! and pushes groups apart:
//! * [`AdaptLoss::Prototypes`]: each text against every group of its task
//!   through learned unit prototypes (normalised softmax with an additive
//!   margin, CosFace), prototypes started at the groups' mean vectors;
//! * [`AdaptLoss::Contrastive`]: supervised contrastive pairs inside the batch
//!   (Khosla et al. 2020): same group = positive, every other text negative.
//!
//! Batches are packed: the dense layers run on the texts' real tokens only,
//! attention pads each text to the batch's longest.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use half::f16;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::adapter::{Adapter, LowRank};
use crate::encoder::{forward, l2_normalize, Out, Start};
use crate::weights::{dense_shape, LayerParams, DENSE};
use crate::{EmbedKind, Embedder, Error};

/// What pulls a group together and pushes groups apart (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptLoss {
    /// Normalised softmax over learned group prototypes, with an additive
    /// cosine margin on the right group.
    Prototypes {
        /// Logit scale (inverse temperature) of the cosines.
        scale: f32,
        /// Subtracted from the right group's cosine.
        margin: f32,
    },
    /// Supervised contrastive loss over the batch's pairs.
    Contrastive {
        /// Temperature of the pair cosines.
        temperature: f32,
    },
}

/// How an adapter is trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdaptOptions {
    /// Top layers adapted (the rest stay the shipped ones).
    pub layers: usize,
    /// Rank of each low-rank update.
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f32,
    /// Passes over the training texts.
    pub epochs: usize,
    /// At most this many optimiser steps in all (bounds the time on big desks).
    pub max_steps: usize,
    /// Texts per batch.
    pub batch: usize,
    /// Texts of one group put together in a batch.
    pub per_group: usize,
    /// Peak learning rate of the low-rank factors (AdamW; linear warm-up over
    /// the first 6 % of steps, then linear decay to zero).
    pub lr: f64,
    /// Learning rate of the prototypes.
    pub prototype_lr: f64,
    /// The loss.
    pub loss: AdaptLoss,
    /// Tokens of a text seen in training (its start; the rest is cut).
    pub max_tokens: usize,
    /// Seed of the initialisation and the batch order.
    pub seed: u64,
    /// Threads training may use.
    pub threads: usize,
}

impl Default for AdaptOptions {
    fn default() -> Self {
        AdaptOptions {
            layers: 4,
            rank: 8,
            alpha: 16.0,
            epochs: 3,
            max_steps: 2_000,
            batch: 32,
            per_group: 4,
            lr: 1e-3,
            prototype_lr: 1e-2,
            loss: AdaptLoss::Prototypes {
                scale: 20.0,
                margin: 0.1,
            },
            max_tokens: 128,
            seed: 13,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// One labelled text to adapt to.
#[derive(Debug, Clone)]
pub struct AdaptExample {
    /// The text.
    pub text: String,
    /// How it is embedded (its prefix).
    pub kind: EmbedKind,
    /// Which task it belongs to (tasks are trained in separate batches).
    pub task: usize,
    /// Its group within the task (same group = should embed close).
    pub group: usize,
}

/// What one training run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdaptReport {
    /// Texts trained on.
    pub examples: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Tokens through the top layers per epoch.
    pub tokens_per_epoch: usize,
    /// Mean loss over the first and the last 10 % of steps.
    pub first_loss: f32,
    /// See `first_loss`.
    pub last_loss: f32,
    /// Seconds of training (after the lower layers ran).
    pub seconds: f32,
    /// Trainable values.
    pub parameters: usize,
}

/// One prepared text: where its kept states are, and its labels.
#[derive(Debug, Clone)]
struct Item {
    offset: usize,
    len: usize,
    task: usize,
    group: usize,
    /// Whether the text was longer than the training window.
    cut: bool,
}

/// Texts run through the shipped lower layers once, kept for training and
/// for computing their vectors with any top layers.
pub struct TrainingSet {
    first_layer: usize,
    hidden: usize,
    items: Vec<Item>,
    /// Rows of `hidden` values, f16 (half the memory of f32).
    states: Vec<f16>,
    truncated: usize,
    seconds: f32,
}

/// Tokens per forward pass while preparing.
const PREPARE_TOKENS: usize = 4096;

impl TrainingSet {
    /// Runs `embedder`'s layers below the top `layers` over each text's
    /// first `max_tokens` tokens on `threads` threads and keeps the output.
    pub fn prepare(
        embedder: &Embedder,
        examples: &[AdaptExample],
        layers: usize,
        max_tokens: usize,
        threads: usize,
    ) -> Result<TrainingSet, Error> {
        let t0 = Instant::now();
        let cfg = &embedder.weights.cfg;
        if layers == 0 || layers > cfg.layers {
            return Err(Error::InvalidInput(format!(
                "cannot adapt {layers} layers of a {}-layer model",
                cfg.layers
            )));
        }
        let first_layer = cfg.layers - layers;
        let h = cfg.hidden;
        let max_tokens = max_tokens.clamp(3, embedder.max_positions());
        let mut windows = Vec::with_capacity(examples.len());
        let mut cut = Vec::with_capacity(examples.len());
        for e in examples {
            let mut ids = embedder.token_ids(&e.text, e.kind)?;
            cut.push(ids.len() > max_tokens);
            if ids.len() > max_tokens {
                let last = ids[ids.len() - 1];
                ids.truncate(max_tokens);
                if embedder.tokenizer.eos.is_some() {
                    ids[max_tokens - 1] = last;
                }
            }
            if ids.is_empty() {
                ids.push(0);
            }
            windows.push(ids);
        }
        let mut items = Vec::with_capacity(examples.len());
        let mut states = Vec::new();
        let mut start = 0;
        while start < windows.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < windows.len()
                && (end == start || tokens + windows[end].len() <= PREPARE_TOKENS)
            {
                tokens += windows[end].len();
                end += 1;
            }
            let out = forward(
                &embedder.weights,
                Start::Tokens(&windows[start..end]),
                0..first_layer,
                Out::States,
                threads,
                &embedder.workspaces,
            )?;
            for (i, rows) in (start..end).zip(out) {
                items.push(Item {
                    offset: states.len() / h,
                    len: rows.len() / h,
                    task: examples[i].task,
                    group: examples[i].group,
                    cut: cut[i],
                });
                states.extend(rows.iter().map(|&v| f16::from_f32(v)));
            }
            start = end;
        }
        Ok(TrainingSet {
            first_layer,
            hidden: h,
            items,
            states,
            truncated: cut.iter().filter(|&&c| c).count(),
            seconds: t0.elapsed().as_secs_f32(),
        })
    }

    /// Texts prepared.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no text was prepared.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Texts longer than the training window (their start was kept).
    pub fn truncated(&self) -> usize {
        self.truncated
    }

    /// Whether text `i` was longer than the training window (its kept
    /// states, and so its [`TrainingSet::vectors`], cover only its start).
    pub fn was_cut(&self, i: usize) -> bool {
        self.items[i].cut
    }

    /// Seconds the lower layers took.
    pub fn prepare_seconds(&self) -> f32 {
        self.seconds
    }

    /// Bytes the kept states take.
    pub fn state_bytes(&self) -> usize {
        self.states.len() * 2
    }

    /// The first layer the kept states feed.
    pub fn first_layer(&self) -> usize {
        self.first_layer
    }

    fn rows(&self, i: usize) -> Vec<f32> {
        let it = &self.items[i];
        let h = self.hidden;
        self.states[it.offset * h..(it.offset + it.len) * h]
            .iter()
            .map(|v| v.to_f32())
            .collect()
    }

    /// The unit vectors of texts `which` through `encoder`'s top layers (the
    /// shipped `Embedder` or an adapted one whose changes start at or above
    /// [`TrainingSet::first_layer`]), from the kept states: the encoder's
    /// vectors of those texts, up to the f16 rounding of the states and the
    /// cut at `max_tokens`.
    pub fn vectors(&self, encoder: &Embedder, which: &[usize]) -> Result<Vec<Vec<f32>>, Error> {
        if encoder.adapted_from.is_some_and(|l| l < self.first_layer) {
            return Err(Error::InvalidInput(
                "the encoder changes layers below the kept states".into(),
            ));
        }
        let layers = self.first_layer..encoder.weights.cfg.layers;
        let mut out = Vec::with_capacity(which.len());
        let mut start = 0;
        while start < which.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < which.len()
                && (end == start || tokens + self.items[which[end]].len <= PREPARE_TOKENS)
            {
                tokens += self.items[which[end]].len;
                end += 1;
            }
            let rows: Vec<Vec<f32>> = which[start..end].iter().map(|&i| self.rows(i)).collect();
            let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
            for mut v in forward(
                &encoder.weights,
                Start::States(&refs),
                layers.clone(),
                Out::Pooled,
                encoder.opts.threads,
                &encoder.workspaces,
            )? {
                l2_normalize(&mut v);
                out.push(v);
            }
            start = end;
        }
        Ok(out)
    }

    /// Trains an adapter of `embedder` (the shipped encoder these states came
    /// from) on texts `which`.
    pub fn train(
        &self,
        embedder: &Embedder,
        which: &[usize],
        opts: &AdaptOptions,
    ) -> Result<(Adapter, AdaptReport), Error> {
        let cfg = &embedder.weights.cfg;
        if cfg.layers - opts.layers != self.first_layer {
            return Err(Error::InvalidInput(format!(
                "states prepared for {} top layers, training asks for {}",
                cfg.layers - self.first_layer,
                opts.layers
            )));
        }
        if opts.rank == 0 || opts.batch < 2 || which.is_empty() {
            return Err(Error::InvalidInput(
                "adaptation needs a rank, batches of two and texts".into(),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.max(1))
            .build()
            .map_err(|e| Error::InvalidInput(format!("training threads: {e}")))?;
        pool.install(|| self.train_here(embedder, which, opts))
    }

    fn train_here(
        &self,
        embedder: &Embedder,
        which: &[usize],
        opts: &AdaptOptions,
    ) -> Result<(Adapter, AdaptReport), Error> {
        let t0 = Instant::now();
        let cfg = embedder.weights.cfg.clone();
        let dev = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let scale = opts.alpha / opts.rank as f32;
        let mut top = Vec::with_capacity(opts.layers);
        for i in self.first_layer..cfg.layers {
            top.push(TopLayer::new(
                &embedder.weights.layer_params(i)?,
                &cfg,
                opts.rank,
                &mut rng,
            )?);
        }
        let model = TopModel {
            layers: top,
            heads: cfg.heads,
            hidden: cfg.hidden,
            eps: cfg.eps,
            scale: scale as f64,
        };

        // Groups per task, and their prototypes at the shipped encoder's means.
        let tasks = which.iter().map(|&i| self.items[i].task).max().unwrap_or(0) + 1;
        let mut groups = vec![0usize; tasks];
        for &i in which {
            let it = &self.items[i];
            groups[it.task] = groups[it.task].max(it.group + 1);
        }
        let mut protos: Vec<Option<Var>> = vec![None; tasks];
        if let AdaptLoss::Prototypes { .. } = opts.loss {
            let frozen = self.vectors(embedder, which)?;
            for (t, &n) in groups.iter().enumerate() {
                let mut sums = vec![0f32; n * cfg.hidden];
                for (&i, v) in which.iter().zip(&frozen) {
                    if self.items[i].task == t {
                        let g = self.items[i].group;
                        for (s, x) in sums[g * cfg.hidden..(g + 1) * cfg.hidden].iter_mut().zip(v) {
                            *s += x;
                        }
                    }
                }
                for row in sums.chunks_exact_mut(cfg.hidden) {
                    l2_normalize(row);
                }
                protos[t] = Some(Var::from_tensor(&Tensor::from_vec(
                    sums,
                    (n, cfg.hidden),
                    &dev,
                )?)?);
            }
        }

        let mut lora_vars = Vec::new();
        for l in &model.layers {
            for (a, b) in l.a.iter().zip(&l.b) {
                lora_vars.push(a.clone());
                lora_vars.push(b.clone());
            }
        }
        let parameters = lora_vars.iter().map(|v| v.elem_count()).sum();
        let adamw = |lr: f64| ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        let mut opt = AdamW::new(lora_vars, adamw(opts.lr))?;
        let proto_vars: Vec<Var> = protos.iter().flatten().cloned().collect();
        let mut popt = if proto_vars.is_empty() {
            None
        } else {
            Some(AdamW::new(proto_vars, adamw(opts.prototype_lr))?)
        };

        let epoch_batches = |rng: &mut StdRng| batches(&self.items, which, opts, rng);
        let per_epoch = epoch_batches(&mut rng.clone()).len().max(1);
        let total = (per_epoch * opts.epochs).clamp(1, opts.max_steps.max(1));
        let warmup = (total as f64 * 0.06).ceil().max(1.0);
        let mut losses = Vec::with_capacity(total);
        let tokens_per_epoch = which.iter().map(|&i| self.items[i].len).sum();
        'epochs: loop {
            for batch in epoch_batches(&mut rng) {
                if losses.len() >= total {
                    break 'epochs;
                }
                let step = losses.len() as f64;
                let factor = if step < warmup {
                    (step + 1.0) / warmup
                } else {
                    ((total as f64 - step) / (total as f64 - warmup).max(1.0)).max(0.0)
                };
                opt.set_learning_rate(opts.lr * factor);
                if let Some(p) = popt.as_mut() {
                    p.set_learning_rate(opts.prototype_lr * factor);
                }
                let task = self.items[batch[0]].task;
                let labels: Vec<u32> = batch.iter().map(|&i| self.items[i].group as u32).collect();
                let rows: Vec<Vec<f32>> = batch.iter().map(|&i| self.rows(i)).collect();
                let e = model.forward(&rows, &dev)?;
                let loss = match opts.loss {
                    AdaptLoss::Prototypes { scale, margin } => {
                        let p = protos[task]
                            .as_ref()
                            .ok_or_else(|| Error::InvalidInput("no prototypes".into()))?;
                        prototype_loss(&e, p.as_tensor(), &labels, scale, margin)?
                    }
                    AdaptLoss::Contrastive { temperature } => {
                        contrastive_loss(&e, &labels, temperature)?
                    }
                };
                let Some(loss) = loss else { continue };
                let grads = loss.backward()?;
                opt.step(&grads)?;
                if let Some(p) = popt.as_mut() {
                    p.step(&grads)?;
                }
                losses.push(loss.to_scalar::<f32>()?);
                if losses.len() % 50 == 0 {
                    let recent = &losses[losses.len() - 50..];
                    tracing::info!(
                        step = losses.len(),
                        of = total,
                        loss = recent.iter().sum::<f32>() / 50.0,
                        seconds = t0.elapsed().as_secs_f32(),
                        "adapting the encoder"
                    );
                }
            }
            if losses.is_empty() {
                return Err(Error::InvalidInput(
                    "no batch had two texts of one group to learn from".into(),
                ));
            }
        }

        let adapter = model.adapter(&embedder.info.name, &cfg, self.first_layer, opts.rank)?;
        let tenth = (losses.len() / 10).max(1);
        let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len().max(1) as f32;
        let report = AdaptReport {
            examples: which.len(),
            steps: losses.len(),
            tokens_per_epoch,
            first_loss: mean(&losses[..tenth]),
            last_loss: mean(&losses[losses.len() - tenth..]),
            seconds: t0.elapsed().as_secs_f32(),
            parameters,
        };
        Ok((adapter, report))
    }
}

/// One epoch's batches of `which`: per task, each group's texts shuffled and
/// cut into runs of `per_group`, runs shuffled and packed into batches of
/// about `batch` texts (one task per batch), batches shuffled.
fn batches(
    items: &[Item],
    which: &[usize],
    opts: &AdaptOptions,
    rng: &mut StdRng,
) -> Vec<Vec<usize>> {
    let mut by_group: std::collections::BTreeMap<(usize, usize), Vec<usize>> = Default::default();
    for &i in which {
        by_group
            .entry((items[i].task, items[i].group))
            .or_default()
            .push(i);
    }
    let mut runs: std::collections::BTreeMap<usize, Vec<Vec<usize>>> = Default::default();
    for ((task, _), mut members) in by_group {
        members.shuffle(rng);
        for run in members.chunks(opts.per_group.max(1)) {
            runs.entry(task).or_default().push(run.to_vec());
        }
    }
    let mut out = Vec::new();
    for (_, mut task_runs) in runs {
        task_runs.shuffle(rng);
        let mut current: Vec<usize> = Vec::new();
        for run in task_runs {
            current.extend(run);
            if current.len() >= opts.batch {
                out.push(std::mem::take(&mut current));
            }
        }
        if current.len() >= 2 {
            out.push(current);
        }
    }
    out.shuffle(rng);
    out
}

/// The contiguous f32 values of a CPU tensor's storage.
fn values<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let (o1, o2) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: input not contiguous")))?;
    match storage {
        candle_core::CpuStorage::F32(x) => Ok(&x[o1..o2]),
        _ => candle_core::bail!("{what}: input not f32"),
    }
}

/// `x·Wᵀ + b` with a frozen `W` and `b`: its backward gives the input's
/// gradient only (candle's matmul also computes the weight's, a third of the
/// work, which a frozen weight never uses).
struct Frozen {
    /// `Wᵀ`, `[in, out]`.
    w_t: Tensor,
    /// `W`, `[out, in]`.
    w: Tensor,
    b: std::sync::Arc<[f32]>,
}

impl candle_core::CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = values(storage, layout, "frozen linear")?;
        let x = Tensor::from_slice(x, layout.shape().dims2()?, &Device::Cpu)?;
        let y = x.matmul(&self.w_t)?;
        let shape = y.shape().clone();
        let mut y: Vec<f32> = y.flatten_all()?.to_vec1()?;
        for row in y.chunks_exact_mut(self.b.len()) {
            for (v, b) in row.iter_mut().zip(self.b.iter()) {
                *v += b;
            }
        }
        Ok((candle_core::CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w)?))
    }
}

/// Layer norm over rows with a frozen scale and shift, forward and backward
/// in one pass each (candle's own has no backward; composed of broadcast ops
/// it costs several passes and allocations per step).
struct FrozenNorm {
    w: std::sync::Arc<[f32]>,
    b: std::sync::Arc<[f32]>,
    eps: f32,
}

/// Mean and inverse standard deviation of a row.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl candle_core::CustomOp1 for FrozenNorm {
    fn name(&self) -> &'static str {
        "frozen-layer-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = values(storage, layout, "layer norm")?;
        let h = self.w.len();
        let mut y = vec![0f32; x.len()];
        for (row, out) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
            let (mean, inv) = row_stats(row, self.eps);
            for (((o, &v), &w), &b) in out
                .iter_mut()
                .zip(row)
                .zip(self.w.iter())
                .zip(self.b.iter())
            {
                *o = (v - mean) * inv * w + b;
            }
        }
        Ok((candle_core::CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let h = self.w.len();
        let x: Vec<f32> = arg.flatten_all()?.to_vec1()?;
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let mut dx = vec![0f32; x.len()];
        let mut gw = vec![0f32; h];
        let mut xhat = vec![0f32; h];
        for ((row, gr), out) in x
            .chunks_exact(h)
            .zip(g.chunks_exact(h))
            .zip(dx.chunks_exact_mut(h))
        {
            let (mean, inv) = row_stats(row, self.eps);
            let (mut m1, mut m2) = (0f32, 0f32);
            for i in 0..h {
                xhat[i] = (row[i] - mean) * inv;
                gw[i] = gr[i] * self.w[i];
                m1 += gw[i];
                m2 += gw[i] * xhat[i];
            }
            let (m1, m2) = (m1 / h as f32, m2 / h as f32);
            for i in 0..h {
                out[i] = inv * (gw[i] - m1 - xhat[i] * m2);
            }
        }
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// BERT's exact GELU, `x·Φ(x)`, forward and backward in one pass each.
struct Gelu;

impl candle_core::CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = values(storage, layout, "gelu")?;
        let y = x
            .iter()
            .map(|&v| {
                0.5 * v
                    * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
            })
            .collect();
        Ok((candle_core::CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let x: Vec<f32> = arg.flatten_all()?.to_vec1()?;
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        // d/dx x·Φ(x) = Φ(x) + x·φ(x).
        let inv_sqrt_2pi = 0.398_942_3_f32;
        let dx = x
            .iter()
            .zip(&g)
            .map(|(&v, &g)| {
                let cdf = 0.5
                    * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
                g * (cdf + v * inv_sqrt_2pi * (-0.5 * v * v).exp())
            })
            .collect();
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// One top layer in candle: frozen weights (as `W` `[out, in]` and `Wᵀ`) and
/// the trainable low-rank factors (`Aᵀ` `[in, rank]`, `Bᵀ` `[rank, out]`).
struct TopLayer {
    w: Vec<(Tensor, Tensor)>,
    bias: Vec<std::sync::Arc<[f32]>>,
    a: Vec<Var>,
    b: Vec<Var>,
    attn_norm: (std::sync::Arc<[f32]>, std::sync::Arc<[f32]>),
    out_norm: (std::sync::Arc<[f32]>, std::sync::Arc<[f32]>),
}

impl TopLayer {
    fn new(
        p: &LayerParams,
        cfg: &crate::config::BertConfig,
        rank: usize,
        rng: &mut StdRng,
    ) -> Result<TopLayer, Error> {
        let dev = Device::Cpu;
        let mut w = Vec::with_capacity(6);
        let mut bias = Vec::with_capacity(6);
        let mut a = Vec::with_capacity(6);
        let mut b = Vec::with_capacity(6);
        for (j, d) in p.dense.iter().enumerate() {
            let (out, inp) = dense_shape(cfg, j);
            let full = Tensor::from_slice(&d.w, (out, inp), &dev)?;
            w.push((full.t()?.contiguous()?, full));
            bias.push(d.b.clone().into());
            // Kaiming-uniform A (as LoRA does), zero B: the update starts at 0.
            let bound = (1.0 / inp as f32).sqrt();
            let init: Vec<f32> = (0..inp * rank)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            a.push(Var::from_tensor(&Tensor::from_vec(
                init,
                (inp, rank),
                &dev,
            )?)?);
            b.push(Var::zeros((rank, out), DType::F32, &dev)?);
        }
        let norm = |n: &crate::weights::Norm| -> Result<_, Error> {
            Ok((n.w.clone().into(), n.b.clone().into()))
        };
        Ok(TopLayer {
            w,
            bias,
            a,
            b,
            attn_norm: norm(&p.attn_norm)?,
            out_norm: norm(&p.out_norm)?,
        })
    }

    /// Dense layer `j` with its update on packed rows `x` `[n, in]`.
    fn dense(&self, j: usize, x: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
        let (w_t, w) = &self.w[j];
        let base = x.contiguous()?.apply_op1(Frozen {
            w_t: w_t.clone(),
            w: w.clone(),
            b: self.bias[j].clone(),
        })?;
        let update = x
            .matmul(self.a[j].as_tensor())?
            .matmul(self.b[j].as_tensor())?;
        base + (update * scale)?
    }
}

/// The adapted top layers and mean pooling, in candle.
struct TopModel {
    layers: Vec<TopLayer>,
    heads: usize,
    hidden: usize,
    eps: f64,
    scale: f64,
}

fn layer_norm(
    x: &Tensor,
    (w, b): &(std::sync::Arc<[f32]>, std::sync::Arc<[f32]>),
    eps: f64,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenNorm {
        w: w.clone(),
        b: b.clone(),
        eps: eps as f32,
    })
}

impl TopModel {
    /// The trained factors as an [`Adapter`] of `model` (layers `first..`).
    fn adapter(
        &self,
        model: &str,
        cfg: &crate::config::BertConfig,
        first: usize,
        rank: usize,
    ) -> Result<Adapter, Error> {
        let mut parts = Vec::with_capacity(self.layers.len() * DENSE.len());
        for l in &self.layers {
            for (a_t, b_t) in l.a.iter().zip(&l.b) {
                // Trained as x·Aᵀ·Bᵀ; stored as A [rank, in], B [out, rank].
                parts.push(LowRank {
                    a: a_t
                        .as_tensor()
                        .t()?
                        .contiguous()?
                        .flatten_all()?
                        .to_vec1()?,
                    b: b_t
                        .as_tensor()
                        .t()?
                        .contiguous()?
                        .flatten_all()?
                        .to_vec1()?,
                });
            }
        }
        Adapter::new(model, cfg, first, rank, self.scale as f32, parts)
    }

    /// Unit vectors of texts given by their kept states (rows of `hidden`).
    fn forward(&self, texts: &[Vec<f32>], dev: &Device) -> Result<Tensor, Error> {
        let h = self.hidden;
        let lens: Vec<usize> = texts.iter().map(|t| t.len() / h).collect();
        let (bsz, lmax, n) = (
            texts.len(),
            lens.iter().copied().max().unwrap_or(1),
            lens.iter().sum::<usize>(),
        );
        let flat: Vec<f32> = texts.iter().flatten().copied().collect();
        let mut x = Tensor::from_vec(flat, (n, h), dev)?;
        // Packed row of each padded slot (n = the zero row), packed rows'
        // padded slots, the attention mask and the pooling matrix.
        let mut pad = Vec::with_capacity(bsz * lmax);
        let mut unpad = Vec::with_capacity(n);
        let mut mask = Vec::with_capacity(bsz * lmax);
        let mut pool = vec![0f32; bsz * n];
        let mut offset = 0;
        for (b, &len) in lens.iter().enumerate() {
            for p in 0..lmax {
                let real = p < len;
                pad.push(if real { (offset + p) as u32 } else { n as u32 });
                mask.push(if real { 0f32 } else { -1e9 });
            }
            for p in 0..len {
                unpad.push((b * lmax + p) as u32);
                pool[b * n + offset + p] = 1.0 / len as f32;
            }
            offset += len;
        }
        let pad = Tensor::from_vec(pad, bsz * lmax, dev)?;
        let unpad = Tensor::from_vec(unpad, n, dev)?;
        let mask = Tensor::from_vec(mask, (bsz, 1, 1, lmax), dev)?;
        let pool = Tensor::from_vec(pool, (bsz, n), dev)?;
        let (nh, hd) = (self.heads, h / self.heads);
        let split = |t: &Tensor, part: usize| -> candle_core::Result<Tensor> {
            t.narrow(2, part * h, h)?
                .reshape((bsz, lmax, nh, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        for l in &self.layers {
            let q = l.dense(0, &x, self.scale)?;
            let k = l.dense(1, &x, self.scale)?;
            let v = l.dense(2, &x, self.scale)?;
            let qkv = Tensor::cat(&[&q, &k, &v], 1)?;
            let qkv = Tensor::cat(&[&qkv, &Tensor::zeros((1, 3 * h), DType::F32, dev)?], 0)?
                .index_select(&pad, 0)?
                .reshape((bsz, lmax, 3 * h))?;
            let (q, k, v) = (split(&qkv, 0)?, split(&qkv, 1)?, split(&qkv, 2)?);
            let scores =
                (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((bsz * lmax, h))?
                .index_select(&unpad, 0)?;
            let attn = l.dense(3, &ctx, self.scale)?;
            x = layer_norm(&(x + attn)?, &l.attn_norm, self.eps)?;
            let mid = l.dense(4, &x, self.scale)?.apply_op1(Gelu)?;
            let ffn = l.dense(5, &mid, self.scale)?;
            x = layer_norm(&(x + ffn)?, &l.out_norm, self.eps)?;
        }
        let e = pool.matmul(&x)?;
        Ok(unit_rows(&e)?)
    }
}

fn unit_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Normalised-softmax loss against prototypes `p` `[groups, hidden]` with
/// an additive margin on each text's own group.
fn prototype_loss(
    e: &Tensor,
    p: &Tensor,
    labels: &[u32],
    scale: f32,
    margin: f32,
) -> Result<Option<Tensor>, Error> {
    let dev = e.device();
    let (b, g) = (labels.len(), p.dim(0)?);
    let cos = e.matmul(&unit_rows(p)?.t()?)?;
    let mut onehot = vec![0f32; b * g];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * g + l as usize] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (b, g), dev)?;
    let logits = ((cos - (&onehot * margin as f64)?)? * scale as f64)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let loss = ((logp * onehot)?.sum_all()? / -(b as f64))?;
    Ok(Some(loss))
}

/// Supervised contrastive loss over the batch (anchors without a positive
/// in the batch are left out; `None` when no anchor has one).
fn contrastive_loss(e: &Tensor, labels: &[u32], temperature: f32) -> Result<Option<Tensor>, Error> {
    let dev = e.device();
    let b = labels.len();
    let sim = (e.matmul(&e.t()?)? / temperature as f64)?;
    let mut self_mask = vec![0f32; b * b];
    let mut pos = vec![0f32; b * b];
    let mut anchors = 0usize;
    for i in 0..b {
        self_mask[i * b + i] = -1e9;
        let n = (0..b).filter(|&j| j != i && labels[j] == labels[i]).count();
        if n == 0 {
            continue;
        }
        anchors += 1;
        for j in 0..b {
            if j != i && labels[j] == labels[i] {
                pos[i * b + j] = 1.0 / n as f32;
            }
        }
    }
    if anchors == 0 {
        return Ok(None);
    }
    let logits = sim.broadcast_add(&Tensor::from_vec(self_mask, (b, b), dev)?)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let pos = Tensor::from_vec(pos, (b, b), dev)?;
    let loss = ((logp * pos)?.sum_all()? / -(anchors as f64))?;
    Ok(Some(loss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::WorkspacePool;
    use crate::weights::{synthetic, BertWeights};
    use crate::Precision;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    }

    /// The fused ops give what candle's own ops give, forward and backward.
    #[test]
    fn fused_ops_match_candle_forward_and_backward() {
        let dev = Device::Cpu;
        let mut rng = StdRng::seed_from_u64(9);
        let mut rand =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let (n, inp, out) = (5, 8, 6);
        let x =
            Var::from_tensor(&Tensor::from_vec(rand(n * inp), (n, inp), &dev).unwrap()).unwrap();
        let r = Tensor::from_vec(rand(n * out), (n, out), &dev).unwrap();
        let rx = Tensor::from_vec(rand(n * inp), (n, inp), &dev).unwrap();
        let w = Tensor::from_vec(rand(out * inp), (out, inp), &dev).unwrap();
        let b: Vec<f32> = rand(out);
        let (gamma, beta) = (rand(inp), rand(inp));
        let bt = Tensor::from_slice(&b, out, &dev).unwrap();
        let (gt, bet) = (
            Tensor::from_slice(&gamma, inp, &dev).unwrap(),
            Tensor::from_slice(&beta, inp, &dev).unwrap(),
        );
        // (fused output, candle's output, the weights their sum is taken with)
        let pairs: Vec<(Tensor, Tensor, &Tensor)> = vec![
            (
                x.as_tensor()
                    .apply_op1(Frozen {
                        w_t: w.t().unwrap().contiguous().unwrap(),
                        w: w.clone(),
                        b: b.clone().into(),
                    })
                    .unwrap(),
                x.as_tensor()
                    .matmul(&w.t().unwrap())
                    .unwrap()
                    .broadcast_add(&bt)
                    .unwrap(),
                &r,
            ),
            (
                x.as_tensor()
                    .apply_op1(FrozenNorm {
                        w: gamma.clone().into(),
                        b: beta.clone().into(),
                        eps: 1e-12,
                    })
                    .unwrap(),
                candle_nn::ops::layer_norm_slow(x.as_tensor(), &gt, &bet, 1e-12).unwrap(),
                &rx,
            ),
            (
                x.as_tensor().apply_op1(Gelu).unwrap(),
                x.as_tensor().gelu_erf().unwrap(),
                &rx,
            ),
        ];
        for (fused, reference, weights) in pairs {
            let close = |a: &Tensor, b: &Tensor| {
                let d: f32 = (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                assert!(d < 1e-4, "{d}");
            };
            close(&fused, &reference);
            let grad = |t: &Tensor| {
                (t * weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
                    .get(&x)
                    .unwrap()
                    .clone()
            };
            close(&grad(&fused), &grad(&reference));
        }
    }

    /// The candle layers that training differentiates compute what the fast
    /// forward pass computes with the trained updates merged in: the adapter
    /// that ships is the one that was trained.
    #[test]
    fn candle_top_layers_match_the_merged_fast_forward() {
        let mut cfg = synthetic::e5_small_shape();
        cfg.layers = 3;
        let w = synthetic::weights(cfg.clone(), Precision::F32, 5);
        let (first, rank) = (1, 4);
        let mut rng = StdRng::seed_from_u64(3);
        let layers: Vec<TopLayer> = (first..cfg.layers)
            .map(|i| TopLayer::new(&w.layer_params(i).unwrap(), &cfg, rank, &mut rng).unwrap())
            .collect();
        let model = TopModel {
            layers,
            heads: cfg.heads,
            hidden: cfg.hidden,
            eps: cfg.eps,
            scale: 2.0,
        };
        let h = cfg.hidden;
        let states: Vec<Vec<f32>> = [5usize, 1, 9]
            .iter()
            .map(|&n| (0..n * h).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            .collect();
        let refs: Vec<&[f32]> = states.iter().map(Vec::as_slice).collect();
        let pool = WorkspacePool::default();
        let fast = |weights: &BertWeights| -> Vec<Vec<f32>> {
            forward(
                weights,
                Start::States(&refs),
                first..cfg.layers,
                Out::Pooled,
                2,
                &pool,
            )
            .unwrap()
            .into_iter()
            .map(|mut v| {
                l2_normalize(&mut v);
                v
            })
            .collect()
        };
        let check = |weights: &BertWeights, model: &TopModel| {
            let got: Vec<Vec<f32>> = model
                .forward(&states, &Device::Cpu)
                .unwrap()
                .to_vec2()
                .unwrap();
            for (g, f) in got.iter().zip(fast(weights)) {
                assert!(cosine(g, &f) > 0.99999, "{}", cosine(g, &f));
            }
        };
        // B = 0: the shipped layers.
        check(&w, &model);
        // Planted updates: the merged layers.
        for l in &model.layers {
            for b in &l.b {
                let n = b.elem_count();
                let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.05f32..0.05)).collect();
                b.set(&Tensor::from_vec(v, b.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let adapter = model.adapter("m", &cfg, first, rank).unwrap();
        let merged = adapter.merged(&w).unwrap();
        check(&merged, &model);
        // The update moved the vectors.
        assert!(cosine(&fast(&merged)[0], &fast(&w)[0]) < 0.9999);
    }
}
