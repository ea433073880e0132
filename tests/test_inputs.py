"""Issue 14: no data loss, no silently wrong input, one line (never a traceback) for every bad input.

Most checks run the CLI in-process (``main([...])``); the interruption tests send
real signals to real ``sparrow`` subprocesses. Paths that even root cannot write
are real: a path under a regular file (NotADirectoryError) and a path in /sys.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import tiny_model

import sparrow_sd
from sparrow_sd.cli import build_parser, main
from sparrow_sd.draft import save_draft
from sparrow_sd.draft.export import export_eagle3
from sparrow_sd.synth import make_clip, read_video, write_mp4
from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.training.datagen import DatagenConfig, completed_ids, run_datagen
from sparrow_sd.training.shards import DataShards
from sparrow_sd.training.sources import synth_samples

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": "1"}


def run_cli(capsys, argv):
    """(exit code, stdout, stderr) of ``sparrow argv`` run in this process."""
    try:
        code = main(argv)
    except SystemExit as exit:  # pragma: no cover - main returns, this is a guard
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(capsys, argv, *fragments):
    code, _, err = run_cli(capsys, argv)
    assert code == 2, err
    assert err.startswith("sparrow: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def truncated_mp4(path: Path, frames: int = 200, keep: float = 0.3) -> Path:
    """A faststart mp4 cut at ``keep`` of its bytes: the header still announces every frame."""
    noise = np.random.default_rng(0).integers(0, 255, (frames, 32, 32, 3), dtype=np.uint8)
    whole = write_mp4(noise, path.with_name("whole-" + path.name), fps=8)
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Everything the bad-input table needs, made once."""
    root = tmp_path_factory.mktemp("inputs")
    w = {"root": root}
    w["mp4"] = write_mp4(make_clip(11, num_frames=8, height=56, width=56, num_events=1).frames, root / "clip.mp4")
    w["file"] = root / "a-file"
    w["file"].write_text("a regular file, so nothing can be created under it\n")
    # a model folder with a config and no weights
    from sparrow_sd.testing.tiny_models import tiny_config

    config = tiny_config("qwen2_vl")
    config.architectures = ["Qwen2VLForConditionalGeneration"]
    w["no_weights"] = root / "no-weights"
    config.save_pretrained(w["no_weights"])
    # datagen output of tiny:qwen2_vl, and a copy with a truncated shard
    model = tiny_model("qwen2_vl")
    from sparrow_sd.models import load_target

    loaded = load_target("tiny:qwen2_vl")
    w["data"] = root / "data"
    run_datagen(loaded.model, synth_samples(loaded.make_inputs, 4, frames=(2,)), w["data"],
                DatagenConfig(max_new_tokens=4, shard_size=2), progress=False)
    w["damaged"] = root / "damaged"
    shutil.copytree(w["data"], w["damaged"])
    shard = sorted(w["damaged"].glob("shard-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    # an eagle3-form draft and its EAGLE-3 export
    draft = tiny_draft(model, "none", architecture="eagle3", aux_layers=(0, 1, 2), draft_vocab=torch.arange(0, 128, 2))
    w["eagle3"] = save_draft(draft, root / "eagle3-draft")
    w["export"] = export_eagle3(w["eagle3"], root / "eagle3-export")
    w["sparrow_draft"] = save_draft(tiny_draft(model, "none"), root / "sparrow-draft")
    # configs
    w["bad_json"] = root / "bad.json"
    w["bad_json"].write_text("{epochs: 2")
    w["bad_type"] = root / "bad-type.json"
    w["bad_type"].write_text(json.dumps({"epochs": "two"}))
    # a JSONL whose first video cannot be read
    (root / "notes.mp4").write_text("not a video\n" * 20)
    w["bad_jsonl"] = root / "bad.jsonl"
    w["bad_jsonl"].write_text("\n".join(json.dumps(
        {"id": f"v{i}", "video": video, "conversations": [{"role": "user", "content": "Describe."}]})
        for i, video in enumerate(["notes.mp4", "clip.mp4"])) + "\n")
    return w


def no_cuda_device() -> str:
    return "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"


# (argv with {placeholders}, fragments the message must hold, whether a model may load first)
BAD_INPUTS = [
    ("generate --video {mp4} --prompt hi --num-frames 0", ["--num-frames", "at least 1"], False),
    ("generate --video {mp4} --prompt hi --num-frames -1", ["--num-frames"], False),
    ("generate --video {mp4} --prompt hi --fps 0", ["--fps"], False),
    ("generate --video {mp4} --prompt hi --temperature -1", ["--temperature"], False),
    ("generate --video {mp4} --prompt hi --top-p 0", ["--top-p"], False),
    ("generate --video {mp4} --prompt hi --threads 0", ["--threads"], False),
    ("generate --video {mp4} --prompt hi --model tiny:gpt2", ["tiny:gpt2", "tiny:qwen2_vl"], False),
    ("generate --video {mp4} --prompt hi --model {no_weights}", ["cannot load", "no-weights"], True),
    ("generate --video {mp4} --prompt hi --model tiny:qwen2_vl --device banana", ["banana", "not a device"], False),
    ("generate --video {mp4} --prompt hi --model tiny:qwen2_vl --device {no_cuda}", ["CUDA"], False),
    ("generate --video {mp4} --prompt hi --model tiny:qwen2_vl --compare", ["--compare", "--draft"], False),
    ("generate --video {mp4} --prompt hi --model tiny:qwen2_vl --draft {data}", ["not a draft folder"], False),
    ("generate --video {root}/missing.mp4 --prompt hi --model tiny:qwen2_vl", ["not found"], False),
    ("generate --video {mp4} --prompt hi --model tiny:qwen2_5_vl --draft {export}", ["does not fit"], True),
    ("datagen --model tiny:qwen2_vl --out {file}/out", ["--out", "is a file"], False),
    ("datagen --model tiny:qwen2_vl --out /sys/sparrow-datagen-out", ["--out", "cannot write"], False),
    ("datagen --model tiny:qwen2_vl --out {root}/d1 --frames 4,x", ["--frames"], False),
    ("datagen --model tiny:qwen2_vl --out {root}/d2 --count 0", ["--count"], False),
    ("datagen --model tiny:qwen2_vl --out {root}/d3 --rank 2 --world 2", ["--rank", "--world"], False),
    ("datagen --model tiny:qwen2_vl --out {root}/d4 --source {root}/missing.jsonl", ["missing.jsonl"], False),
    ("datagen --model tiny:qwen2_vl --out {root}/d5 --source {bad_jsonl}", ["bad.jsonl:1", "--skip-bad-videos"], True),
    ("datagen --model tiny:qwen2_5_vl --out {data} --count 4 --frames 2 --max-new-tokens 4 --shard-size 2",
     ["other settings", "target_model_type 'qwen2_vl' there, 'qwen2_5_vl' here"], True),
    ("datagen --model tiny:qwen2_vl --out {data} --count 4 --frames 2 --max-new-tokens 5 --shard-size 2",
     ["max_new_tokens 4 there, 5 here"], True),
    ("train --model tiny:qwen2_vl --data {data} --out {file}/draft", ["--out", "is a file"], False),
    ("train --model tiny:qwen2_vl --data {data} --out /sys/sparrow-train-out", ["cannot write"], False),
    ("train --model tiny:qwen2_vl --data {data} --out {root}/t1 --config {root}/nosuch.json", ["nosuch.json", "not found"],
     False),
    ("train --model tiny:qwen2_vl --data {data} --out {root}/t2 --config {bad_json}", ["not valid JSON"], False),
    ("train --model tiny:qwen2_vl --data {data} --out {root}/t3 --config {bad_type}", ["epochs", "'two'"], False),
    ("train --model tiny:qwen2_vl --data {damaged} --out {root}/t4", ["damaged", "datagen"], False),
    ("train --model tiny:qwen2_vl --data {root}/nodata --out {root}/t5", ["no info.json"], False),
    ("train --model tiny:qwen2_vl --data {data} --out {root}/t6 --resume", ["--resume", "no checkpoint"], False),
    ("train --model tiny:qwen2_vl --data {data} --out {root}/t7 --device banana", ["banana"], False),
    ("export --to eagle3 --draft {eagle3} --out {file}/e3", ["--out", "is a file"], False),
    ("export --to eagle3 --draft {export} --out {root}/e4", ["already an EAGLE-3 folder"], False),
    ("bench --model tiny:qwen2_vl --clips 0 --out {root}/b1", ["--clips", "at least 1"], False),
    ("bench --model tiny:qwen2_vl --visual-tokens 0 --out {root}/b2", ["--visual-tokens"], False),
    ("bench --model tiny:qwen2_vl --out {file}/bench", ["--out", "is a file"], False),
    ("bench --model tiny:qwen2_vl --draft nonsense --out {root}/b3", ["NAME=FOLDER"], False),
    ("bench --model tiny:qwen2_vl --visual-tokens 40 --temperatures 0 1 --sample-at 99 --out {root}/b5",
     ["--sample-at [99]", "not among --visual-tokens"], False),
    ("bench --model tiny:qwen2_vl --visual-tokens 40 --sample-at 40 --out {root}/b6",
     ["--sample-at", "sampling temperature"], False),
    ("bench --model tiny:qwen2_vl --draft x={root}/missing --out {root}/b4", ["draft folder not found"], False),
    ("drafts pack --draft {sparrow_draft} --out {file}/packed", ["--out", "is a file"], False),
    ("drafts tau --model tiny:qwen2_vl --draft a={sparrow_draft} --out {file}/tau.json", ["--out", "is a file"], False),
    ("frobnicate", ["invalid choice"], False),
]


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[r[0].split(" --")[0] + ":" + str(i) for i, r in enumerate(BAD_INPUTS)])
def test_every_bad_input_is_one_line_exit_2_and_leaves_nothing(world, row, capsys, monkeypatch):
    """Exit code 2, exactly one line on stderr, no traceback, no output file left behind; and every check
    that does not need the model runs before any model loads."""
    template, fragments, may_load = row
    if "/sys/" in template and not _sys_is_read_only():
        pytest.skip("no read-only /sys here")
    values = {k: str(v) for k, v in world.items()} | {"no_cuda": no_cuda_device()}
    argv = [part.format(**values) for part in template.split()]
    import sparrow_sd.testing as testing

    loads = []
    build = testing.build_tiny_model
    monkeypatch.setattr(testing, "build_tiny_model", lambda *a, **k: loads.append(a) or build(*a, **k))
    before = files_under(world["root"])
    one_line(capsys, argv, *fragments)
    assert files_under(world["root"]) == before
    if not may_load:
        assert loads == [], "a model was loaded before a check that needs none"


def _sys_is_read_only() -> bool:
    """/sys (sysfs) refuses new files even to root."""
    if not Path("/sys").is_dir():
        return False
    try:
        Path("/sys/sparrow-probe").touch()
    except OSError:
        return True
    Path("/sys/sparrow-probe").unlink()
    return False


# --- 1: datagen never overwrites a shard; a missing or damaged shard is named and regenerated ----------


def test_datagen_resume_after_a_gap_or_a_damaged_shard_loses_nothing(tmp_path, capsys):
    out = tmp_path / "data"
    argv = ["datagen", "--model", "tiny:qwen2_vl", "--out", str(out), "--count", "12", "--frames", "2,4",
            "--max-new-tokens", "4", "--shard-size", "2"]
    expected = None
    assert run_cli(capsys, argv)[0] == 0
    expected = completed_ids(out)
    assert len(expected) == 12 and len(list(out.glob("shard-*.safetensors"))) == 6
    kept = {p.name: p.read_bytes() for p in out.glob("shard-*.safetensors")}
    # a shard in the middle goes missing: the rerun names it, writes its samples into a new shard, overwrites none
    (out / "shard-000-00002.safetensors").unlink()
    del kept["shard-000-00002.safetensors"]
    code, stdout, _ = run_cli(capsys, argv)
    assert code == 0 and "shard-000-00002.safetensors is missing" in stdout and "2 of them regenerated" in stdout
    assert all((out / name).read_bytes() == data for name, data in kept.items())  # nothing overwritten
    assert completed_ids(out) == expected
    record = json.loads((out / "datagen-rank000.json").read_text())
    assert record["written"] == 2 and len(record["regenerated_ids"]) == 2 and record["shards_written"]
    # a truncated shard: reported, moved aside, its samples regenerated; no traceback
    victim = out / "shard-000-00004.safetensors"
    victim.write_bytes(victim.read_bytes()[:-50])
    code, stdout, err = run_cli(capsys, argv)
    assert code == 0 and "Traceback" not in err
    assert "shard-000-00004.safetensors is damaged" in stdout and (out / (victim.name + ".damaged")).is_file()
    assert completed_ids(out) == expected
    # and once whole, a rerun writes nothing
    code, stdout, _ = run_cli(capsys, argv)
    assert code == 0 and "0 samples written" in stdout and "12 already present" in stdout
    ids = DataShards(out).ids
    assert sorted(ids) == sorted(expected)


# --- 3 and 7: signals --------------------------------------------------------------------------------


def _wait_for(predicate, process, timeout=120):
    start = time.time()
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the process ended early: {process.communicate()}")
        if time.time() - start > timeout:
            process.kill()
            raise AssertionError("timed out waiting for the process")
        time.sleep(0.1)


@pytest.mark.slow
def test_ctrl_c_during_train_saves_a_checkpoint_and_says_how_to_resume(world, tmp_path, capsys):
    out = tmp_path / "draft"
    argv = ["train", "--model", "tiny:qwen2_vl", "--data", str(world["data"]), "--out", str(out), "--epochs", "5000",
            "--checkpoint-every", "3", "--threads", "1"]
    process = subprocess.Popen([sys.executable, "-m", "sparrow_sd.cli", *argv], env=ENV, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (out / "checkpoint" / "state.pt").is_file(), process)  # training is under way
    process.send_signal(signal.SIGINT)
    stdout, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("sparrow: training interrupted (SIGINT)") and "--resume" in err, err
    state = torch.load(out / "checkpoint" / "state.pt")
    assert state["step"] >= 3 and f"step {state['step']} of" in err  # saved on the signal, not only every 3 steps
    last = err.strip()
    # the command it prints resumes from that step
    resume = last.split("resume with: sparrow ", 1)[1].split()
    resume[resume.index("--epochs") + 1] = "1"  # one epoch: the checkpoint's step is at or past its end
    code, stdout, _ = run_cli(capsys, resume)
    assert code == 0 and f"resuming from step {state['step']}" in stdout


@pytest.mark.slow
def test_sigterm_during_datagen_keeps_finished_samples_and_is_one_line(tmp_path, capsys):
    out = tmp_path / "data"
    argv = ["datagen", "--model", "tiny:qwen2_vl", "--out", str(out), "--count", "400", "--frames", "2",
            "--max-new-tokens", "4", "--shard-size", "1", "--threads", "1"]
    process = subprocess.Popen([sys.executable, "-m", "sparrow_sd.cli", *argv], env=ENV, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(list(out.glob("shard-*.safetensors"))) >= 2, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err == "sparrow: interrupted (SIGTERM); rerun the same command to resume: finished work is kept\n"
    done = completed_ids(out)
    assert len(done) >= 2 and not list(out.glob("*.partial"))


def test_a_shard_write_cut_short_leaves_no_partial_file_and_the_next_flush_writes_it_whole(tmp_path, monkeypatch):
    """SIGTERM can land inside ``save_file``: the half-written ``.partial`` must go, and the samples
    stay pending so that datagen's closing flush writes them as one complete shard."""
    import sparrow_sd.training.shards as shards

    real_save = shards.save_file

    def save_then_stop(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a shard")
        raise KeyboardInterrupt

    writer = shards.ShardWriter(tmp_path / "data", rank=0, size=2)
    writer.add("a", {"x": torch.arange(3)})
    monkeypatch.setattr(shards, "save_file", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        writer.add("b", {"x": torch.arange(4)})
    assert not list((tmp_path / "data").glob("*.partial")) and not writer.written
    monkeypatch.setattr(shards, "save_file", real_save)
    writer.flush()
    assert [p.name for p in (tmp_path / "data").iterdir() if p.suffix == ".safetensors"] == writer.written
    assert completed_ids(tmp_path / "data") == {"a", "b"}


def test_a_stop_during_a_shards_bookkeeping_is_delivered_after_it():
    from sparrow_sd.training.shards import hold_signals

    steps = []

    def handler(signum, frame):
        steps.append("stopped")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with hold_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                steps.append("bookkeeping done")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert steps == ["bookkeeping done", "stopped"]


def test_ctrl_c_in_any_command_is_one_line(world):
    """A real SIGINT to a `sparrow generate` process while it loads its model: one line, exit 130.

    In a process of its own, which sets SIGINT as a terminal gives it: after the suite's earlier
    files (not alone) a SIGINT never reached Python's handler on the 2-core AVX2 machine, in the
    pytest process and in a child it started, although conftest finds no handler, mask or
    ignored disposition left behind by any test; the child's reset made it pass."""
    script = (
        "import os, signal, sys, time\n"
        "import sparrow_sd.commands.generate as command\n"
        "import sparrow_sd.models as models\n"
        "from sparrow_sd.cli import main\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # what a terminal gives a command\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
        "def interrupted(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    for _ in range(1000):\n"
        "        time.sleep(0.01)\n"
        "    with open('/proc/self/status') as status:  # the SIGINT never arrived: say what held it\n"
        "        sys.stderr.write(''.join(line for line in status if line.startswith('Sig')))\n"
        "    sys.exit(99)\n"
        "models.load_target = command.load_target = interrupted\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["generate", "--model", "tiny:qwen2_vl", "--video", str(world["mp4"]), "--prompt", "hi"]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr  # a KeyboardInterrupt that escaped main()
    assert done.returncode == 130 and done.stderr == "sparrow: interrupted (SIGINT)\n", (done.returncode, done.stderr)


# --- 4, 5, 6: what the video really gave -----------------------------------------------------------


def test_a_truncated_mp4_is_decoded_as_far_as_it_goes_with_a_warning(tmp_path, capsys):
    cut = truncated_mp4(tmp_path / "cut.mp4")
    video = read_video(cut, num_frames=16)
    assert video.container_frames == 200 and 0 < video.total_frames < 200 and len(video.frames) == 16
    assert video.warnings and "announces 200 frames" in video.warnings[0]
    code, out, err = run_cli(capsys, ["generate", "--model", "tiny:qwen2_vl", "--video", str(cut), "--prompt", "hi",
                                      "--max-new-tokens", "4", "--json"])
    assert code == 0
    report = json.loads(out)
    assert report["container_frames"] == 200 and report["decoded_frames"] == video.total_frames
    assert report["warnings"] == video.warnings
    assert err.startswith("sparrow: warning: ") and "truncated" in err


@pytest.mark.parametrize("flags", [["--num-frames", "1000"], ["--fps", "1000"]])
def test_sampling_never_duplicates_frames_and_reports_what_it_took(world, flags, capsys):
    code, out, _ = run_cli(capsys, ["generate", "--model", "tiny:qwen2_vl", "--video", str(world["mp4"]),
                                    "--prompt", "hi", "--max-new-tokens", "4", "--json", *flags])
    assert code == 0
    report = json.loads(out)
    assert report["frames"] == report["sampled_frames"] == report["decoded_frames"] == 8
    assert report["video_duration_s"] == pytest.approx(1.0) and report["sampling_note"]
    code, out, _ = run_cli(capsys, ["generate", "--model", "tiny:qwen2_vl", "--video", str(world["mp4"]),
                                    "--prompt", "hi", "--max-new-tokens", "4", *flags])
    assert code == 0 and "8 of 8 decoded frames, 1.0 s" in out


@pytest.mark.slow
def test_decoding_keeps_only_the_sampled_frames_in_memory(tmp_path):
    """Peak memory while sampling 16 frames of a 400-frame 480x480 video stays far below the decoded
    video's size (~140 MB in YUV); the file is written here, decoded in a fresh process that measures."""
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 480
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        ramp = np.add.outer(np.arange(480), np.arange(480)) % 256
        base = np.stack([ramp, ramp.T, 255 - ramp], -1).astype(np.uint8)
        for i in range(400):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")))
        container.mux(stream.encode(None))
    script = f"""
import threading, time
from sparrow_sd.synth import read_video

def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

peak, done = [0.0], threading.Event()

def watch():  # the largest resident size while decoding, sampled every 5 ms
    while not done.is_set():
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.005)

before = rss_mb()
watcher = threading.Thread(target=watch)
watcher.start()
video = read_video({str(path)!r}, num_frames=16)
done.set()
watcher.join()
assert video.total_frames == 400 and len(video.frames) == 16
print(peak[0] - before)
"""
    result = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    grown_mb = float(result.stdout.strip().splitlines()[-1])
    assert grown_mb < 60, f"peak memory grew by {grown_mb:.0f} MB"


def test_generate_shows_progress_for_decoding_and_prefill(world):
    import io

    from sparrow_sd.commands.generate import GenerateOptions, run_generate

    out, err = io.StringIO(), io.StringIO()
    run_generate(GenerateOptions(model="tiny:qwen2_vl", video=str(world["mp4"]), prompt="hi", max_new_tokens=4,
                                 progress=True), out=out, err=err)
    shown = err.getvalue()
    assert "decoding video" in shown and "8/8" in shown and "prefill of" in shown and "layer" in shown


# --- 9: a JSONL with an unreadable video ------------------------------------------------------------


def test_jsonl_bad_video_names_the_line_or_is_skipped_and_recorded(world, tmp_path, capsys):
    source = tmp_path / "videos.jsonl"
    shutil.copy(world["mp4"], tmp_path / "clip.mp4")
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    source.write_text("\n".join(json.dumps({"id": f"v{i}", "video": v, "conversations": [
        {"role": "user", "content": "Describe."}]}) for i, v in enumerate(["clip.mp4", "notes.mp4", "clip.mp4"])))
    argv = ["datagen", "--model", "tiny:qwen2_vl", "--source", str(source), "--num-frames", "2",
            "--max-new-tokens", "4", "--out", str(tmp_path / "out")]
    one_line(capsys, argv, f"{source}:2", "v1", "--skip-bad-videos")
    code, stdout, _ = run_cli(capsys, argv + ["--skip-bad-videos"])
    assert code == 0 and "skipped" in stdout
    record = json.loads((tmp_path / "out" / "datagen-rank000.json").read_text())
    assert [(s["line"], s["id"]) for s in record["skipped_videos"]] == [(2, "v1")]
    assert completed_ids(tmp_path / "out") == {"v0", "v2"}


# --- EAGLE-3 folders as --draft ---------------------------------------------------------------------


def test_an_exported_eagle3_folder_runs_as_a_draft(world, capsys):
    common = ["generate", "--model", "tiny:qwen2_vl", "--video", str(world["mp4"]), "--prompt", "hi",
              "--max-new-tokens", "12", "--json", "--num-frames", "4"]
    code, out, err = run_cli(capsys, common + ["--draft", str(world["eagle3"])])
    assert code == 0, err
    native = json.loads(out)
    code, out, err = run_cli(capsys, common + ["--draft", str(world["export"]), "--compare"])
    assert code == 0, err
    exported = json.loads(out)
    assert exported["tokens"] == native["tokens"] and exported["tau"] == native["tau"]
    assert exported["identical_to_autoregressive"] is True


# --- what must be shown -----------------------------------------------------------------------------


def _all_parsers(parser, name="sparrow"):
    yield name, parser
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for sub, child in action.choices.items():
                yield from _all_parsers(child, f"{name} {sub}")


def test_every_help_shows_every_default():
    for name, parser in _all_parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            default = action.default
            if default not in (None, False, argparse_suppress()):
                shown = " ".join(str(default).split())
                assert f"(default: {shown})" in text, f"{name} {action.option_strings[0]}: default {default!r} not shown"


def test_train_help_states_the_config_defaults():
    """`sparrow train` flags default to unset (the config file's value wins); their help names
    DraftTrainConfig's default, which must be the real one."""
    import re

    from sparrow_sd.training.trainer import DraftTrainConfig

    train = dict(_all_parsers(build_parser()))["sparrow train"]
    defaults = DraftTrainConfig()
    for action in train._actions:
        if not hasattr(defaults, action.dest) or action.default is not None:
            continue
        stated = re.search(r"\(default: ([^)]+)\)$", action.help).group(1).split(";")[0]  # "; ..." qualifies it
        real = getattr(defaults, action.dest)
        assert {"on": True, "off": False}.get(stated, stated) == real or (
            isinstance(real, (int, float)) and not isinstance(real, bool) and float(stated) == real), action.dest


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def test_generate_runs_quietly_without_future_warnings(world, capsys):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(capsys, ["generate", "--model", "tiny:qwen2_vl", "--video", str(world["mp4"]),
                                          "--prompt", "hi", "--max-new-tokens", "4", "--num-frames", "4"])
    assert code == 0 and err == ""
    noisy = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not noisy, [str(w.message) for w in noisy]


def test_errors_doc_lists_every_message_and_readme_links_it():
    doc = (ROOT / "docs" / "errors.md").read_text()
    assert "docs/errors.md" in (ROOT / "README.md").read_text()
    for fragment in ("is a file", "cannot write", "not a device", "no CUDA device", "cannot load", "no tiny",
                     "--skip-bad-videos", "other settings", "is damaged", "is missing", "no checkpoint",
                     "already an EAGLE-3 folder", "training interrupted", "interrupted (SIGTERM)",
                     "announces", "sparrow-sd[bench]", "sparrow-sd[testbed]", "internal error", "--compare"):
        assert fragment in doc, fragment


# --- Also: dependencies and the video module --------------------------------------------------------


def test_dependencies_are_ranges_and_plotting_and_gguf_are_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"]
    torch_dep = next(d for d in deps if d.startswith("torch"))
    assert "==" not in torch_dep and "<" in torch_dep
    assert not any(d.startswith(("matplotlib", "gguf")) for d in deps)
    extras = project["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["bench"])
    assert any(d.startswith("gguf") for d in extras["testbed"])
    assert ".[test,bench,testbed]" in (ROOT / "Makefile").read_text()


def test_missing_extras_are_named(world, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    one_line(capsys, ["bench", "--model", "tiny:qwen2_vl", "--visual-tokens", "40", "--clips", "1",
                      "--max-new-tokens", "2", "--no-prompt-lookup", "--out", str(world["root"] / "b")],
             "matplotlib", "pip install 'sparrow-sd[bench]'")
    monkeypatch.setitem(sys.modules, "gguf", None)
    from sparrow_sd.errors import SparrowError
    from sparrow_sd.testbed.assets import convert_gguf

    with pytest.raises(SparrowError, match=r"gguf.*pip install 'sparrow-sd\[testbed\]'"):
        convert_gguf(world["root"] / "x.gguf", world["root"] / "converted")


def test_read_video_lives_in_a_neutral_module_and_synth_still_exports_it():
    import sparrow_sd.synth
    import sparrow_sd.video

    assert sparrow_sd.synth.read_video is sparrow_sd.video.read_video
    assert sparrow_sd.synth.VideoDecodeError is sparrow_sd.video.VideoDecodeError
    assert sparrow_sd.video.read_video.__module__ == "sparrow_sd.video"
    assert Path(sparrow_sd.__file__).resolve().is_relative_to(ROOT)
