//! `preimage` command line: parses arguments and calls the library.
use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::{Parser, Subcommand};
use preimage::data::folder::{ImageFolder, SkipLog};
use preimage::data::meshes::Axis;
use preimage::data::render::{render_dataset, Colours, RenderOptions};
use preimage::device::DeviceSpec;
use preimage::encoder::{self, WeightSource};
use preimage::train::encoder::{EncoderRun, EncoderTrainConfig};
use preimage::optimize::commands as opt;
use preimage::with_backend;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "preimage", version, about = "Invert a frozen CNN's features (codes) back into images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render the built-in pose dataset (or your OBJ meshes) with known camera pose.
    Render {
        /// Output folder: DIR/<class>/<id>.png, DIR/manifest.csv, DIR/classes.csv.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10000)]
        count: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 64)]
        size: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Render OBJ files from this folder instead: one class per file (`DIR/<class>.obj`) or
        /// per subfolder, whose OBJ files at any depth are its instances (ShapeNet's
        /// `<synset>/<model>/models/model_normalized.obj`). Y up, front towards +z.
        #[arg(long)]
        meshes: Option<PathBuf>,
        /// Comma-separated subset of classes.
        #[arg(long, value_delimiter = ',')]
        classes: Option<Vec<String>>,
        /// Object colours: `class` (each class has a typical hue, 80 % of its objects take it)
        /// or `random` (any hue, independent of the class).
        #[arg(long, value_enum, default_value_t = Colours::Class)]
        colours: Colours,
        /// The OBJ files' up axis (+x, -x, +y, -y, +z, -z), turned to +y.
        #[arg(long, default_value = "+y", allow_hyphen_values = true)]
        up: Axis,
        /// The axis the OBJ files' front faces, turned to +z (azimuth 0 is a front view).
        /// ShapeNetCore v2: -z.
        #[arg(long, default_value = "+z", allow_hyphen_values = true)]
        front: Axis,
    },
    /// Train the posenet encoder (classification + pose) on an image folder.
    TrainEncoder {
        #[arg(long, default_value = "configs/posenet.toml")]
        config: PathBuf,
        /// Image folder (overrides train.data in the config).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Validation folder with the same class folders (overrides train.val_data); without
        /// it a seeded val_fraction of --data is held out.
        #[arg(long)]
        val_data: Option<PathBuf>,
        /// Run folder for checkpoints, weights and TensorBoard logs.
        #[arg(long, default_value = "runs/posenet")]
        out: PathBuf,
        #[command(flatten)]
        over: TrainOverrides,
        /// Continue the run in --out from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Train a decoder from a tap's codes back to images (D&B / DeePSiM).
    TrainDecoder {
        /// Decoder config (e.g. configs/decoder-fc7.toml).
        #[arg(long)]
        config: PathBuf,
        /// Code file from `preimage extract` (codes computed once; fast).
        #[arg(long)]
        codes: Option<PathBuf>,
        /// Image folder: the targets of --codes (default: the folder recorded in the code
        /// file), or, without --codes, the images to encode on the fly (with --weights, --run or --encoder): a
        /// folder, or image files and folders as one unlabelled set.
        #[arg(long, num_args = 1..)]
        data: Vec<PathBuf>,
        /// Validation images of their own (a folder, or files and folders; overrides
        /// train.val_data), encoded by the encoder; without them a seeded val_fraction of the
        /// training data is held out.
        #[arg(long, num_args = 1..)]
        val_data: Vec<PathBuf>,
        /// Encoder for on-the-fly codes (posenet, alexnet, vgg16, ..., or auto: the network
        /// --weights or --run holds; given, it computes codes even where the config names a
        /// code file), or the one codes written elsewhere came from (with --codes, --weights
        /// and --data; by default the network the weights hold).
        #[arg(long)]
        encoder: Option<String>,
        /// Encoder weights (default with --codes: the file recorded in the code file).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// A train-encoder run folder (uses its encoder.safetensors).
        #[arg(long)]
        run: Option<PathBuf>,
        /// Tap to invert (overrides train.layer).
        #[arg(long)]
        layer: Option<String>,
        /// Input size of the encoder (224, or HxW), for images encoded on the fly and codes
        /// written elsewhere (default: the encoder's own; a file from `extract` records it).
        #[arg(long, value_parser = encoder::parse_input_size)]
        input_size: Option<[usize; 2]>,
        /// Resize before the centre crop, as for `extract`: the shorter side (224) or HxW
        /// (224x224, the aspect not kept), for images encoded on the fly and codes written
        /// elsewhere (default: torchvision's 256 for 224, in proportion).
        #[arg(long)]
        resize: Option<encoder::Resize>,
        /// Run folder: checkpoints, decoder weights, TensorBoard logs.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        over: TrainOverrides,
        /// Train on at most this many images.
        #[arg(long)]
        max_images: Option<usize>,
        /// Also checkpoint every N steps within an epoch (overrides train.checkpoint_every;
        /// 0 = after each epoch only), so a run killed in a long epoch resumes where it was.
        #[arg(long)]
        checkpoint_every: Option<usize>,
        /// Continue the run in --out from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// cpu, cuda[:N], or several GPUs for data-parallel training (cuda:0,cuda:1): each
        /// batch is split over them, the optimizer steps on the first.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// The whole pipeline on data it renders itself, with an HTML report (resumes finished stages).
    Quickstart {
        /// Output folder: data, runs, code files and report/index.html.
        #[arg(long, default_value = "runs/quickstart")]
        out: PathBuf,
        /// A few minutes instead of about 20: smaller images, networks and training.
        #[arg(long)]
        fast: bool,
        /// Seed of every random draw (rendering, initialization, data order).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Decode saved codes, or images' codes, with a trained decoder: DIR/<id>.png (and a grid).
    Reconstruct {
        /// Decoder run folder (from train-decoder).
        #[arg(long)]
        decoder: PathBuf,
        /// Code file from `preimage extract` (or PyTorch's, or NumPy's .npy/.npz).
        #[arg(long, required_unless_present = "image")]
        codes: Option<PathBuf>,
        /// ...or images (files or folders): encoded with the decoder's encoder, decoded, and
        /// scored against the image (OUT/reconstruct.csv).
        #[arg(long, num_args = 1.., conflicts_with_all = ["codes", "ids", "range"])]
        image: Vec<PathBuf>,
        /// Encoder weights for --image (default: the file the decoder recorded).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// A train-encoder run folder instead of --weights.
        #[arg(long)]
        run: Option<PathBuf>,
        /// Ids to decode, in this order, or row numbers from 0 (default: all).
        #[arg(long, value_delimiter = ',', conflicts_with = "range")]
        ids: Option<Vec<String>>,
        /// Rows START:END of the code file (end exclusive; either side may be left out).
        #[arg(long)]
        range: Option<String>,
        /// Output folder: OUT/<id>.png (ids keep their class folder).
        #[arg(long)]
        out: PathBuf,
        /// Also tile the reconstructions into one PNG (with --image: each beside its image).
        #[arg(long)]
        grid: Option<PathBuf>,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Edit codes, then decode: interpolate, scale/set/zero units, add, binarize, dropout, random, pose.
    Edit {
        /// Decoder run folder (from train-decoder).
        #[arg(long)]
        decoder: PathBuf,
        /// Code file from `preimage extract` (or PyTorch's, or NumPy's .npy/.npz).
        #[arg(long, required_unless_present = "image")]
        codes: Option<PathBuf>,
        /// ...or images (files or folders), encoded with the decoder's encoder; ids are their
        /// file names (class folders kept).
        #[arg(long, num_args = 1.., conflicts_with = "codes")]
        image: Vec<PathBuf>,
        /// An op (repeatable): "interpolate A B --steps N", "scale 3=2,7=0", "set 3=1", "zero 1,2",
        /// "add A - B + C", "binarize", "dropout 0.5 --seed 1", "random --count 8 --seed 1",
        /// "pose 90[,20] [--steps 150] [--keep 10]". Units are indices (channels for spatial codes).
        #[arg(long = "op")]
        ops: Vec<String>,
        /// Edit TOML file with `ops = ["...", ...]` (run after the --op ones).
        #[arg(long = "ops")]
        ops_file: Option<PathBuf>,
        /// Codes the per-code ops edit: ids or row numbers from 0 (default: the first 8 rows).
        #[arg(long, value_delimiter = ',', conflicts_with = "range")]
        ids: Option<Vec<String>>,
        /// Rows START:END of the code file to edit.
        #[arg(long)]
        range: Option<String>,
        /// Output folder: OUT/<i>_<op>/*.png, a grid per op and edits.json.
        #[arg(long)]
        out: PathBuf,
        /// Encoder weights for --image and pose edits (default: the file the decoder recorded).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// A train-encoder run folder instead of --weights.
        #[arg(long)]
        run: Option<PathBuf>,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Learned vs optimization inversion on held-out images: metrics table, CSV/JSON, TensorBoard.
    Compare {
        /// Decoder run folders, comma-separated (one tap each).
        #[arg(long, value_delimiter = ',', required = true)]
        decoder: Vec<PathBuf>,
        /// Held-out images (not the decoders' training images): a folder, or image files and
        /// folders.
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// Number of images.
        #[arg(long, default_value_t = 16)]
        count: usize,
        /// Methods: decoder, optim (M&V from noise), refined (M&V from the decoder's output).
        #[arg(long, value_delimiter = ',', default_value = "decoder,optim,refined")]
        methods: Vec<preimage::compare::Method>,
        /// Output folder: compare.csv, compare.json, <tap>.png, tb/.
        #[arg(long)]
        out: PathBuf,
        /// Encoder weights (default: the file each decoder recorded).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// A train-encoder run folder instead of --weights.
        #[arg(long)]
        run: Option<PathBuf>,
        /// Optimization settings (default: the built-in `invert` preset, configs/optimize-invert.toml).
        #[arg(long)]
        optimize_config: Option<PathBuf>,
        /// Override the optimization's steps (with jitter).
        #[arg(long)]
        steps: Option<usize>,
        /// Override the optimization's final steps (without jitter, at a lower rate).
        #[arg(long)]
        final_steps: Option<usize>,
        /// Seed of the image choice, the noise start and the jitter.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Encode an image folder and save the codes at one or more taps.
    Extract {
        #[command(flatten)]
        enc: EncoderArgs,
        /// Comma-separated taps (e.g. conv5,fc6).
        #[arg(long, value_delimiter = ',', required = true)]
        layer: Vec<String>,
        /// Image folder (class subfolders or flat), or image files, folders and lists (.txt:
        /// one path per line) as one unlabelled set; ids are paths below the folder holding
        /// them all.
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// Output code file: .safetensors, .npz (NumPy: np.load gives each tap, label, pose, ids), or .pt (torch.load gives a dict of them).
        #[arg(long)]
        out: PathBuf,
        /// Images encoded at once.
        #[arg(long, visible_alias = "batch-size", default_value_t = 64, value_parser = preimage::util::at_least_one)]
        batch: usize,
        /// Go on with an extraction into --out that stopped (killed, or an error): it keeps its
        /// progress in <out>.progress.json. Starts afresh when there is none.
        #[arg(long)]
        resume: bool,
        /// Store the codes as f32, or f16 / bf16 (half the file; PyTorch's .half()). Every
        /// command reads them back as f32.
        #[arg(long, default_value = "f32", value_parser = preimage::tensorfile::parse_float_dtype)]
        dtype: safetensors::Dtype,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// The encoder's top classes for images, and its accuracy on a class-folder set: check a
    /// weights file before inverting its codes.
    Classify {
        #[command(flatten)]
        enc: EncoderArgs,
        /// Images: a class-folder set (accuracy where its classes are the network's, by name or,
        /// for ImageNet's n01440764-style folders, by position), or image files, folders and lists.
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// Classes listed per image.
        #[arg(long, default_value_t = 5, value_parser = preimage::util::at_least_one)]
        top: usize,
        /// Also write every image's top classes as CSV (id,label,class_1,p_1,...).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Images encoded at once.
        #[arg(long, visible_alias = "batch-size", default_value_t = 64, value_parser = preimage::util::at_least_one)]
        batch: usize,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Time the standard workloads (median of --runs after warm-up); compare with PyTorch.
    Bench {
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Also write the timings as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Timings from `bench/pytorch_reference.py --json FILE`, to print ratios (several files:
        /// rounds, merged as --table merges them).
        #[arg(long, num_args = 1..)]
        pytorch: Vec<PathBuf>,
        /// Timed runs per workload (the median, min and max are reported).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Untimed runs before them.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Tiny sizes (smoke test): the numbers mean nothing.
        #[arg(long)]
        quick: bool,
        /// Image folder for the extraction throughput (default: 1024 freshly rendered images).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Only workloads whose name contains one of these (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Instead of running, print the table of timings saved with --json; several files are
        /// rounds of the same workloads, merged per workload to the round with the median median
        /// (--json then writes the merged timings).
        #[arg(long, num_args = 1.., conflicts_with_all = ["quick", "data", "only"])]
        table: Vec<PathBuf>,
    },
    /// Invert codes by optimization (Mahendran & Vedaldi), of images, folders or a code file; `--init decoder:RUN` refines a decoder's output.
    Invert {
        #[command(flatten)]
        enc: EncoderArgs,
        #[command(flatten)]
        args: opt::InvertArgs,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Activation maximization: one image per target unit (fc8:3, conv5:12, conv5:12@2:2, fc8:chair).
    Visualize {
        #[command(flatten)]
        enc: EncoderArgs,
        #[command(flatten)]
        args: opt::VisualizeArgs,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// DeepDream: amplify what a layer sees in an image, over octaves.
    Dream {
        #[command(flatten)]
        enc: EncoderArgs,
        #[command(flatten)]
        args: opt::DreamArgs,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Caricature (M&V): exaggerate what a layer sees in an image.
    Caricature {
        #[command(flatten)]
        enc: EncoderArgs,
        #[command(flatten)]
        args: opt::CaricatureArgs,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Change an image until the encoder calls it --class, keeping it visibly the same picture.
    Transform {
        #[command(flatten)]
        enc: EncoderArgs,
        #[command(flatten)]
        args: opt::TransformArgs,
        /// cpu, or cuda[:N] in a build with --features cuda.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// What a code file (ours, PyTorch's, NumPy's), a decoder or encoder run, or a weights file holds.
    Info {
        /// Files or run folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List an encoder's taps with their code shapes.
    Taps {
        #[command(flatten)]
        enc: EncoderArgs,
    },
}

/// Overrides of a training config's `[train]` values.
#[derive(clap::Args)]
struct TrainOverrides {
    /// Epochs (overrides train.epochs).
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size (overrides train.batch_size).
    #[arg(long, visible_alias = "batch", value_parser = preimage::util::at_least_one)]
    batch_size: Option<usize>,
    /// Learning rate (overrides train.lr).
    #[arg(long)]
    lr: Option<f64>,
    /// Seed of initialization, split and data order (overrides train.seed).
    #[arg(long)]
    seed: Option<u64>,
}

impl TrainOverrides {
    fn apply(&self, epochs: &mut usize, batch_size: &mut usize, lr: &mut f64, seed: &mut u64) {
        *epochs = self.epochs.unwrap_or(*epochs);
        *batch_size = self.batch_size.unwrap_or(*batch_size);
        *lr = self.lr.unwrap_or(*lr);
        *seed = self.seed.unwrap_or(*seed);
    }
}

/// Which encoder and weights.
#[derive(clap::Args)]
struct EncoderArgs {
    /// posenet, alexnet, vgg11, vgg13, vgg16, vgg19 or a _bn variant; auto: the network
    /// --weights or --run holds (random weights need the name).
    #[arg(long, default_value = encoder::AUTO)]
    encoder: String,
    /// torchvision state_dict (.pth/.safetensors) or a preimage encoder checkpoint.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A train-encoder run folder (uses its encoder.safetensors).
    #[arg(long)]
    run: Option<PathBuf>,
    /// Input size in pixels: the side (224) or HxW (240x320; torchvision networks take any size)
    /// (default: the encoder's own, 224 for torchvision nets).
    #[arg(long, value_parser = encoder::parse_input_size)]
    input_size: Option<[usize; 2]>,
    /// Resize before the centre crop to the input size: the shorter side (`224` for
    /// torchvision's `Resize(224)` + `CenterCrop(224)`), or HxW, the aspect not kept (`224x224`
    /// for `Resize((224, 224))`; `256x256` with a 227 input for Caffe's warped ImageNet).
    /// Default: torchvision's 256 for a 224 input, in proportion for others; posenet: the
    /// input size.
    #[arg(long)]
    resize: Option<encoder::Resize>,
    /// Seed for random weights when neither --weights nor --run is given (and, in the
    /// optimization commands, for the initial noise and the random transforms).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl EncoderArgs {
    fn source(&self) -> Result<WeightSource> {
        WeightSource::from_args(self.weights.as_deref(), self.run.as_deref(), self.seed)
    }
    fn load<B: burn::tensor::backend::Backend>(&self, dev: &B::Device) -> Result<encoder::Loaded<B>> {
        encoder::load::<B>(&self.encoder, &self.source()?, encoder::Input { size: self.input_size, resize: self.resize }, dev)
    }

    /// [`EncoderArgs::load`], or the encoder `codes` records where no weights are given.
    fn load_for_codes<B: burn::tensor::backend::Backend>(&self, codes: Option<&Path>, dev: &B::Device) -> Result<encoder::Loaded<B>> {
        let given = WeightSource::given(self.weights.as_deref(), self.run.as_deref())?;
        encoder::load_for_codes::<B>(&self.encoder, given, self.seed, encoder::Input { size: self.input_size, resize: self.resize }, codes, dev)
    }
}

fn main() {
    preimage::util::keep_freed_memory();
    preimage::util::quiet_broken_pipe();
    let cli = Cli::parse();
    if let Err(e) = preimage::util::on_cpu_workers(move || run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Render { out, count, size, seed, meshes, classes, colours, up, front } => {
            let s = render_dataset(&out, &RenderOptions { count, size, seed, classes, meshes, colours, up, front })?;
            println!("{s}");
            Ok(())
        }
        Command::TrainEncoder { config, data, val_data, out, over, resume, device } => {
            let mut cfg: EncoderTrainConfig = preimage::config::load(&config)?;
            let t = &mut cfg.train;
            over.apply(&mut t.epochs, &mut t.batch_size, &mut t.lr, &mut t.seed);
            if let Some(d) = data {
                t.data = Some(d);
            }
            t.val_data = val_data.or(t.val_data.take());
            let data = t.data.clone().with_context(|| format!("no data folder: pass --data or set train.data in {}", config.display()))?;
            let run = EncoderRun { config: cfg, data, out, resume };
            with_backend!(device, |B, dev| {
                preimage::train::encoder::train::<B>(&run, &dev)?;
            });
            Ok(())
        }
        Command::TrainDecoder { config, codes, data, val_data, encoder, weights, run, layer, input_size, resize, out, over, max_images, checkpoint_every, resume, device } => {
            use preimage::train::decoder::{DecoderRun, DecoderTrainConfig};
            let mut cfg: DecoderTrainConfig = preimage::config::load(&config)?;
            let t = &mut cfg.train;
            over.apply(&mut t.epochs, &mut t.batch_size, &mut t.lr, &mut t.seed);
            t.max_images = max_images.or(t.max_images);
            t.checkpoint_every = checkpoint_every.unwrap_or(t.checkpoint_every);
            // --encoder without --codes asks for codes on the fly, whatever file the config names.
            if let (None, None, Some(file), false) = (&codes, &encoder, &t.codes, data.is_empty()) {
                eprintln!(
                    "note: codes from {} (train.codes of {}), their images below --data; to encode --data's images on the fly instead, pass --encoder auto",
                    file.display(),
                    config.display()
                );
            }
            t.codes = if codes.is_none() && encoder.is_some() { None } else { codes.or(t.codes.take()) };
            if !data.is_empty() {
                t.data = data;
            }
            if !val_data.is_empty() {
                t.val_data = val_data;
            }
            let layer = layer.or(t.layer.clone()).with_context(|| format!("no tap to invert: pass --layer or set train.layer in {}", config.display()))?;
            let weights = WeightSource::given(weights.as_deref(), run.as_deref())?;
            let source = preimage::train::decoder::CodeSource::from_args(t.codes.clone(), t.data.clone(), encoder, weights, preimage::encoder::Input { size: input_size, resize })?;
            let run = DecoderRun { config: cfg, source, layer, out, resume };
            with_backend!(device, |B, dev, devs| {
                preimage::train::decoder::train_on::<B>(&run, &devs)?;
            });
            Ok(())
        }
        Command::Quickstart { out, fast, seed, device } => {
            use preimage::quickstart::{Profile, QuickstartOptions};
            let opts = QuickstartOptions { out, profile: if fast { Profile::fast() } else { Profile::default_run() }, seed };
            with_backend!(device, |B, dev| preimage::quickstart::quickstart::<B>(&opts, &dev)?);
            Ok(())
        }
        Command::Compare { decoder, data, count, methods, out, weights, run, optimize_config, steps, final_steps, seed, device } => {
            let mut optimize = preimage::optimize::load_config(optimize_config.as_deref(), "invert")?;
            optimize.solver.steps = steps.unwrap_or(optimize.solver.steps);
            optimize.solver.final_steps = final_steps.unwrap_or(optimize.solver.final_steps);
            let weights = WeightSource::given(weights.as_deref(), run.as_deref())?;
            let opts = preimage::compare::CompareOptions { decoders: decoder, data, count, methods, out: out.clone(), weights, optimize, seed };
            let rows = with_backend!(device, |B, dev| preimage::compare::compare::<B>(&opts, &dev)?.0);
            println!("{}", preimage::compare::table(&rows));
            println!("wrote {0}/compare.csv, {0}/compare.json, side-by-side images and TensorBoard logs (tensorboard --logdir {0}/tb)", out.display());
            Ok(())
        }
        Command::Reconstruct { decoder, codes, image, weights, run, ids, range, out, grid, device } => {
            use preimage::reconstruct::{Input, ReconstructOptions, Selection};
            let input = match codes {
                Some(path) if weights.is_none() && run.is_none() => Input::Codes(path),
                Some(_) => anyhow::bail!("--weights and --run are for encoding --image; codes are decoded as they are"),
                None => Input::Images { paths: image, weights: WeightSource::given(weights.as_deref(), run.as_deref())? },
            };
            let opts = ReconstructOptions { decoder, input, selection: Selection::from_args(ids, range.as_deref())?, out: out.clone(), grid: grid.clone() };
            let written = with_backend!(device, |B, dev| preimage::reconstruct::reconstruct::<<B as AutodiffBackend>::InnerBackend>(&opts, &dev)?);
            println!("wrote {} images to {}{}", written.len(), out.display(), grid.map(|g| format!(" and the grid {}", g.display())).unwrap_or_default());
            Ok(())
        }
        Command::Edit { decoder, codes, image, ops, ops_file, ids, range, out, weights, run, device } => {
            use preimage::edit::{EditOp, EditOptions};
            let mut parsed = ops.iter().map(|o| EditOp::parse(o)).collect::<Result<Vec<_>>>()?;
            if let Some(f) = &ops_file {
                parsed.extend(preimage::edit::read_ops_file(f)?);
            }
            let weights = WeightSource::given(weights.as_deref(), run.as_deref())?;
            let selection = preimage::reconstruct::Selection::from_args(ids, range.as_deref())?;
            let input = match codes {
                Some(path) => preimage::reconstruct::Input::Codes(path),
                None => preimage::reconstruct::Input::Images { paths: image, weights: weights.clone() },
            };
            let opts = EditOptions { decoder, input, ops: parsed, selection, out: out.clone(), weights };
            with_backend!(device, |B, dev| preimage::edit::edit::<B>(&opts, &dev)?);
            println!("wrote {}/edits.json", out.display());
            Ok(())
        }
        Command::Extract { enc, layer, data, out, batch, resume, dtype, device } => {
            let opts = preimage::extract::ToFile { batch_size: batch, resume, dtype };
            with_backend!(device, |B, dev| extract::<B>(&enc, &layer, &data, &out, &opts, &dev))
        }
        Command::Classify { enc, data, top, out, batch, device } => {
            with_backend!(device, |B, dev| classify::<B>(&enc, &data, top, out.as_deref(), batch, &dev))
        }
        Command::Bench { device, json, pytorch, runs, warmup, quick, data, only, table } => {
            let opts = preimage::bench::BenchOptions { runs, warmup, quick, data, only };
            let reference = (!pytorch.is_empty()).then(|| preimage::bench::read_rounds(&pytorch)).transpose()?;
            let report = if table.is_empty() {
                let context = preimage::bench::Context::here(&device);
                preimage::bench::Report { workloads: with_backend!(device, |B, dev| preimage::bench::run::<B>(&opts, &dev)?), context: Some(context) }
            } else {
                preimage::bench::read_rounds(&table)?
            };
            for c in [&report.context, &reference.as_ref().and_then(|r| r.context.clone())].into_iter().flatten() {
                println!("{}", c.line());
            }
            println!("{}", preimage::bench::table(&report.workloads, reference.as_ref().map(|r| r.workloads.as_slice())));
            if let Some(path) = json {
                preimage::util::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
            }
            Ok(())
        }
        Command::Invert { enc, args, device } => {
            with_backend!(device, |B, dev| opt::invert::<B>(enc.load_for_codes::<B>(args.codes.as_deref(), &dev)?, enc.seed, &args, &dev).map(|_| ()))
        }
        Command::Visualize { enc, args, device } => {
            with_backend!(device, |B, dev| opt::visualize::<B>(enc.load::<B>(&dev)?, enc.seed, &args, &dev).map(|_| ()))
        }
        Command::Dream { enc, args, device } => {
            with_backend!(device, |B, dev| opt::dream::<B>(enc.load::<B>(&dev)?, enc.seed, &args, &dev).map(|_| ()))
        }
        Command::Caricature { enc, args, device } => {
            with_backend!(device, |B, dev| opt::caricature::<B>(enc.load::<B>(&dev)?, enc.seed, &args, &dev).map(|_| ()))
        }
        Command::Transform { enc, args, device } => {
            with_backend!(device, |B, dev| opt::transform::<B>(enc.load::<B>(&dev)?, enc.seed, &args, &dev).map(|_| ()))
        }
        Command::Info { paths } => {
            for p in paths {
                print!("{}", preimage::info::describe(&p)?);
            }
            Ok(())
        }
        Command::Taps { enc } => {
            type B = preimage::device::Cpu;
            let loaded = enc.load::<B>(&Default::default())?;
            let spec = &loaded.net.spec;
            println!("{} (input {}×{}: {}, then centre crop; {} classes)", spec.arch, spec.input_size[0], spec.input_size[1], spec.resize.describe(), spec.classes.len());
            let shapes = spec.tap_shapes()?;
            // Our own network's module names mean nothing in torchvision.
            let torch = if spec.arch == "posenet" { Default::default() } else { spec.torch_modules() };
            if !torch.is_empty() {
                println!("  {:<8} {:<16} output of torchvision's", "tap", "shape");
            }
            for tap in spec.taps() {
                let shape = format!("{:?}", shapes[&tap]);
                println!("  {tap:<8} {shape:<16} {}", torch.get(&tap).map_or("", String::as_str));
            }
            Ok(())
        }
    }
}

fn classify<B: AutodiffBackend>(enc: &EncoderArgs, data: &[PathBuf], top: usize, out: Option<&Path>, batch: usize, dev: &B::Device) -> Result<()> {
    use preimage::classify;
    let loaded = enc.load::<B::InnerBackend>(dev)?;
    let skips = SkipLog::new();
    let folder = ImageFolder::from_paths(data, &skips)?;
    let (predictions, note) = classify::classify(&loaded, &folder, top, batch, dev)?;
    let classes = &loaded.net.spec.classes;
    const SHOWN: usize = 20;
    for p in predictions.iter().take(SHOWN) {
        let tops: Vec<String> = p.top.iter().map(|&(c, prob)| format!("{} {:.1} %", classes[c], 100.0 * prob)).collect();
        let label = p.label.map(|l| format!(" [{}]", classes[l])).unwrap_or_default();
        println!("{}{label}: {}", p.id, tops.join(", "));
    }
    if predictions.len() > SHOWN {
        println!("… and {} more images{}", predictions.len() - SHOWN, out.map(|o| format!(" (all in {})", o.display())).unwrap_or_default());
    }
    if let Some(note) = note {
        println!("note: {note}");
    }
    if let Some(a) = classify::accuracy(&predictions) {
        println!("accuracy on {} images: top-1 {:.2} %, top-{} {:.2} %", a.count, 100.0 * a.top1, a.k, 100.0 * a.topk);
    }
    if let Some(path) = out {
        preimage::util::write_atomic(path, classify::csv(&predictions, classes).as_bytes())?;
        println!("wrote {}", path.display());
    }
    skips.report();
    Ok(())
}

fn extract<B: AutodiffBackend>(enc: &EncoderArgs, layer: &[String], data: &[PathBuf], out: &Path, opts: &preimage::extract::ToFile, dev: &B::Device) -> Result<()> {
    let loaded = enc.load::<B::InnerBackend>(dev)?;
    let skips = SkipLog::new();
    let folder = ImageFolder::from_paths(data, &skips)?;
    let mut layer = layer.to_vec();
    let mut seen = std::collections::HashSet::new();
    layer.retain(|t| seen.insert(t.clone()));
    let n = preimage::extract::extract_to_file(&loaded, &folder, &layer, out, opts, dev)?;
    println!("wrote {n} codes at {} to {}", layer.join(", "), out.display());
    skips.report();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A README command line as words: `# comments` and optional `[...]` groups dropped,
    /// double quotes kept together.
    fn words(line: &str) -> Vec<String> {
        let (mut out, mut word, mut quoted, mut depth, mut any) = (Vec::new(), String::new(), false, 0, false);
        let mut prev = ' ';
        for c in line.chars() {
            match c {
                '"' if depth == 0 => (quoted, any) = (!quoted, true),
                '#' if !quoted && prev.is_whitespace() => break,
                '[' if !quoted => depth += 1,
                ']' if !quoted && depth > 0 => depth -= 1,
                c if c.is_whitespace() && !quoted => {
                    if any && depth == 0 {
                        out.push(std::mem::take(&mut word));
                    }
                    (word, any) = (String::new(), false);
                }
                c if depth == 0 => (any, word) = (true, word + &c.to_string()),
                _ => {}
            }
            prev = c;
        }
        if any && depth == 0 {
            out.push(word);
        }
        out
    }

    /// Every `preimage` command the README's code blocks show parses with this command line
    /// (flags and values renamed in the code are caught here), and so does every edit op.
    /// Lines with placeholders (`...`, `<ids>`) are left out.
    #[test]
    fn readme_commands_parse() {
        let readme = include_str!("../README.md");
        let (mut block, mut line, mut checked) = (false, String::new(), 0);
        for raw in readme.lines() {
            if raw.starts_with("```") {
                block = !block;
                continue;
            }
            if !block {
                continue;
            }
            line.push_str(raw.trim_end().trim_end_matches('\\'));
            if raw.trim_end().ends_with('\\') {
                line.push(' ');
                continue;
            }
            let full = std::mem::take(&mut line);
            let cmd = full.trim().strip_prefix("cargo run --release -- ").map(|r| format!("preimage {r}")).unwrap_or_else(|| full.trim().to_string());
            if !cmd.starts_with("preimage ") || cmd.contains("...") || cmd.contains('<') {
                continue;
            }
            let args = words(&cmd);
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("README: `{cmd}` does not parse:\n{e}"));
            if let Command::Edit { ops, .. } = &cli.command {
                for o in ops {
                    preimage::edit::EditOp::parse(o).unwrap_or_else(|e| panic!("README: `{cmd}`: {e:#}"));
                }
            }
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} README commands found");
    }

    #[test]
    fn readme_words() {
        assert_eq!(words(r#"preimage edit --op "scale 3=2" [--seed 1 [--x y]] --out d   # c [x]"#), ["preimage", "edit", "--op", "scale 3=2", "--out", "d"]);
        assert_eq!(words("a [b] c"), ["a", "c"]);
        assert!(Cli::try_parse_from(words("preimage extract --out x --no-such-flag 1")).is_err());
    }
}
