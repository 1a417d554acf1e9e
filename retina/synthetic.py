"""Deterministic procedural fundus photographs with ICDR-graded lesions, in the Kaggle layout.

    python -m retina.synthetic --out data/demo --n 1000 --size 256 --seed 0 [--workers W] [--quiet] [--overwrite]

Writes DIR/train/<patient>_{left,right}.jpeg and DIR/trainLabels.csv (`image,level`). Each image: a
circular orange-red field on black with optic disc, macula and vessels; lesions grow with the grade
(1 microaneurysms; 2 + hemorrhages, hard exudates; 3 hemorrhages in all quadrants, venous beading;
4 + neovascularisation, preretinal hemorrhage). Image i depends only on (seed, i), not on workers.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from retina.cli import run_command
from retina.errors import RetinaError
from retina.pools import worker_pool

LABELS_CSV = "trainLabels.csv"
IMAGE_SHARES = (0.735, 0.069, 0.151, 0.025, 0.020)  # EyePACS trainLabels.csv, grades 0..4
SAME_GRADE_P = 0.75  # chance the patient's other eye has the worse eye's grade (else one lower)
# Layer masks are blended over the background in this order, each towards its colour (RGB).
_COLOURS = {"vein": (112, 26, 20), "artery": (160, 42, 28), "nv": (175, 30, 26),
            "drusen": (222, 196, 120), "exudate": (252, 228, 88), "cotton": (236, 222, 196),
            "blood": (105, 12, 8), "preretinal": (135, 6, 4), "dust": (45, 32, 26)}  # fmt: skip


@dataclass(frozen=True)
class Eye:
    """One image to draw: its row in the CSV, its patient, which eye, and its ICDR grade."""

    index: int
    patient: int
    side: str  # "left" | "right"
    grade: int

    @property
    def image_id(self) -> str:
        return f"{self.patient}_{self.side}"


def _patient_quota(n_patients: int) -> np.ndarray:
    """Patients per worse-eye grade. A worse eye of grade g comes with a second eye of g (prob
    SAME_GRADE_P = s) or g - 1, so image share t_k = (P_k (1 + s) + P_(k+1) (1 - s)) / 2 for k > 0;
    solving that from grade 4 down turns IMAGE_SHARES into patient shares P."""
    t, p = 2 * np.asarray(IMAGE_SHARES) / sum(IMAGE_SHARES), np.zeros(6)
    for k in range(4, 0, -1):
        p[k] = (t[k] - p[k + 1] * (1 - SAME_GRADE_P)) / (1 + SAME_GRADE_P)
    raw = np.append(1 - p[1:5].sum(), p[1:5]) * n_patients
    counts = np.floor(raw).astype(int)
    counts[np.argsort(counts - raw, kind="stable")[: n_patients - counts.sum()]] += 1
    # Small demo sets must still hold every grade a couple of times, or splits cannot stratify
    # and training never sees the rare grades: the extra patients come out of grade 0.
    floor = 2 if n_patients >= 25 else 1 if n_patients >= 5 else 0
    short = np.maximum(0, floor - counts[1:])
    counts[1:] += short
    counts[0] -= short.sum()
    return counts


def plan_eyes(n: int, seed: int) -> list[Eye]:
    """The n images in CSV order: patient 1 left, 1 right, 2 left, ... (odd n: last has one eye)."""
    rng = np.random.default_rng([seed, 0])
    worst = rng.permutation(np.repeat(np.arange(5), _patient_quota((n + 1) // 2)))
    eyes: list[Eye] = []
    for p, g in enumerate(worst.tolist()):
        other = g if g == 0 or rng.random() < SAME_GRADE_P else g - 1
        pair = (g, other) if rng.random() < 0.5 else (other, g)
        if len(eyes) + 1 == n:  # a lone last eye carries the patient's quota grade
            pair = (g,)
        for side, grade in zip(("left", "right"), pair, strict=False):
            eyes.append(Eye(len(eyes), p + 1, side, grade))
    return eyes


@dataclass(frozen=True)
class _Geometry:
    """Where things are; (u, v) are offsets from the field centre in field radii."""

    cx: float
    cy: float
    radius: float  # of the fundus field, pixels
    disc: tuple[float, float]
    disc_r: float
    fovea: tuple[float, float]

    def at(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + u * self.radius, self.cy + v * self.radius

    def spot(self, rng: np.random.Generator, quadrant: int | None = None, rmax: float = 0.9):
        """A random point in the field (optionally in one quadrant), off the optic disc."""
        for _ in range(20):
            a = math.pi / 2 * (rng.uniform(0, 4) if quadrant is None else quadrant + rng.random())
            r = math.sqrt(rng.uniform(0.02, rmax**2))
            u, v = r * math.cos(a), r * math.sin(a)
            if math.hypot(u - self.disc[0], v - self.disc[1]) > 1.3 * self.disc_r:
                break
        return self.at(u, v)


def _vessel_tree(rng: np.random.Generator, geo: _Geometry) -> tuple[list, list]:
    """Veins and arteries as (points, width px, depth), leaving the disc as curved random walks
    that branch; the temporal arcades curve round the macula (right-eye template: temporal left)."""
    step = 0.045 * geo.radius

    def walk(out: list, x: float, y: float, a: float, turn: float, w: float, n: int, depth: int):
        pts = [(x, y)]  # a: heading (radians), w: width (px), n: steps left
        for k in range(n):
            a += turn + rng.normal(0, 0.1)
            x, y = x + step * math.cos(a), y + step * math.sin(a)
            if math.hypot(x - geo.cx, y - geo.cy) > 0.97 * geo.radius:
                break
            pts.append((x, y))
            if depth < 2 and k > 2 and rng.random() < 0.11:  # a thinner, shorter branch
                fork = a + rng.choice((-1, 1)) * rng.uniform(0.4, 1.0)
                rest = int(0.7 * (n - k))
                walk(out, x, y, fork, rng.normal(0, 0.03), 0.62 * w, rest, depth + 1)
        out.append((pts, w, depth))

    veins, arteries = [], []
    x0, y0 = geo.at(*geo.disc)
    # (start angle, turn per step, steps, width factor): upper and lower temporal arcades,
    # upper and lower nasal vessels, two small macular branches.
    mains = ((-1.75, -0.045, 38, 1.0), (1.75, 0.045, 38, 1.0), (-1.1, 0.02, 26, 0.8))
    mains += ((1.1, -0.02, 26, 0.8), (2.9, 0.0, 12, 0.45), (3.4, 0.0, 12, 0.45))
    for a0, turn, steps, wf in mains:
        for out, width, sign in ((veins, 0.042, 1), (arteries, 0.03, -1)):
            a = a0 + sign * rng.uniform(0.05, 0.2) + rng.normal(0, 0.08)
            walk(out, x0, y0, a, turn * rng.uniform(0.8, 1.2), width * wf * geo.radius, steps, 0)
    return veins, arteries


def _dot(draw, rng, xy, r: float, alpha: float, blot: bool = False) -> None:
    x, y = xy
    if not blot or r < 2:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=int(alpha))
        return
    a = np.linspace(0, 2 * math.pi, 11)[:-1]  # blot: a jagged, elongated, rotated ellipse
    rr = r * (1 + 0.22 * rng.standard_normal(10))
    px, py = rr * np.cos(a), rr * rng.uniform(0.55, 1.0) * np.sin(a)
    c, s = math.cos(theta := rng.uniform(0, math.pi)), math.sin(theta)
    draw.polygon(list(zip(x + c * px - s * py, y + s * px + c * py, strict=True)), fill=int(alpha))


def _draw_lesions(rng: np.random.Generator, grade: int, geo: _Geometry, veins: list, d: dict):
    """ICDR lesions for `grade` onto the layer masks `d`; sizes are fractions of the field."""
    R = geo.radius
    for _ in range(rng.integers(*((0, 1), (3, 9), (8, 21), (15, 31), (15, 31))[grade])):
        r = max(0.6, R * rng.uniform(0.012, 0.02))  # microaneurysms: tiny dark-red dots
        _dot(d["blood"], rng, geo.spot(rng), r, rng.uniform(190, 255))
    if grade < 2:
        return
    if grade == 2:  # dot and blot hemorrhages; from grade 3 on in every quadrant
        quadrants = [None] * int(rng.integers(3, 9))
    else:
        quadrants = [q for q in range(4) for _ in range(rng.integers(4, 8))]
    for q in quadrants:
        r = R * (rng.uniform(0.025, 0.04) if rng.random() < 0.4 else rng.uniform(0.045, 0.08))
        _dot(d["blood"], rng, geo.spot(rng, q), r, rng.uniform(200, 255), blot=True)
    for _ in range(rng.integers(1, 4) if grade == 2 else rng.integers(2, 6)):
        a, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.12, 0.55)  # around the fovea
        cx, cy = geo.at(geo.fovea[0] + dist * math.cos(a), geo.fovea[1] + dist * math.sin(a))
        for _ in range(rng.integers(5, 16)):  # hard exudates: bright yellow clusters
            xy = cx + rng.normal(0, 0.05 * R), cy + rng.normal(0, 0.05 * R)
            r = max(0.6, R * rng.uniform(0.015, 0.035))
            _dot(d["exudate"], rng, xy, r, rng.uniform(220, 255))
    for _ in range(rng.integers(0, 3) if grade == 2 else rng.integers(1, 5)):  # cotton-wool spots
        r = R * rng.uniform(0.035, 0.06)
        _dot(d["cotton"], rng, geo.spot(rng, rmax=0.7), r, rng.uniform(150, 210))
    if grade < 3:
        return
    for pts, width, depth in veins:  # venous beading: sausage-like bulges along larger veins
        for xy in pts[3 :: rng.integers(3, 5)] if depth <= 1 and rng.random() < 0.6 else ():
            _dot(d["vein"], rng, xy, max(0.8, width * rng.uniform(0.6, 0.9)), 255)
    if grade < 4:
        return
    for k in range(rng.integers(1, 4)):  # neovascular tufts: at the disc, then along veins
        pts = veins[rng.integers(len(veins))][0]
        cx, cy = geo.at(*geo.disc) if k == 0 else pts[rng.integers(len(pts))]
        for _ in range(rng.integers(6, 13)):
            x, y, a, line = cx, cy, rng.uniform(0, 2 * math.pi), [(cx, cy)]
            for _ in range(rng.integers(12, 28)):
                a += rng.normal(0, 0.7)  # tortuous: a large turn at every step
                x, y = x + 0.018 * R * math.cos(a), y + 0.018 * R * math.sin(a)
                line.append((x, y))
            d["nv"].line(line, fill=230, width=max(1, round(0.008 * R)), joint="curve")
    for _ in range(rng.integers(1, 3)):  # preretinal hemorrhage: boat shape, flat fluid level
        x, y = geo.spot(rng, rmax=0.65)
        a = R * rng.uniform(0.12, 0.22)
        b = a * rng.uniform(0.6, 1.0)
        d["preretinal"].chord([x - a, y - b, x + a, y + b], 0, 180, fill=int(rng.uniform(225, 255)))


def _background(rng, geo: _Geometry, pigment: np.ndarray, u: np.ndarray, v: np.ndarray):
    """Reflectance [S, S, 3] float32: pigment with choroidal texture, dark macula, pale disc."""
    size = u.shape[1]
    texture = np.ones((size, size), np.float32)
    for cells, amplitude in ((6, 0.07), (24, 0.03)):  # choroidal texture: smooth random fields
        small = Image.fromarray(rng.standard_normal((cells, cells), dtype=np.float32), mode="F")
        texture += amplitude * np.asarray(small.resize((size, size), Image.Resampling.BICUBIC))
    macula = np.exp(-((u - geo.fovea[0]) ** 2 + (v - geo.fovea[1]) ** 2) / (2 * 0.2**2))
    refl = pigment * (texture * (1 - rng.uniform(0.25, 0.45) * macula))[..., None]
    dd = np.sqrt((u - geo.disc[0]) ** 2 + (v - geo.disc[1]) ** 2) / geo.disc_r
    disc = np.clip((1.1 - dd) / 0.25, 0, 1)[..., None]
    cup = 0.8 * np.clip((0.5 - dd) / 0.2, 0, 1)[..., None]
    refl += (np.float32((248, 212, 150)) - refl) * disc
    refl += (np.float32((255, 240, 205)) - refl) * cup
    return refl


def render_fundus(eye: Eye, size: int, seed: int) -> Image.Image:
    """One RGB fundus image of `size` px. Anatomy and nuisance come from (seed, eye.index) and
    lesions from their own stream, so changing only the grade changes only the lesions."""
    rng = np.random.default_rng([seed, 1, eye.index])  # anatomy and nuisance
    pigment = np.random.default_rng([seed, 3, eye.patient]).uniform((185, 72, 30), (228, 112, 58))
    jx, jy = rng.uniform(-0.015, 0.015, 2) * size
    disc, disc_r = (rng.uniform(0.4, 0.5), rng.normal(0, 0.05)), rng.uniform(0.14, 0.18)
    fovea = rng.uniform(-0.35, -0.25), rng.uniform(0.0, 0.08)
    R = size * rng.uniform(0.42, 0.46)  # field radius: a black border is left around it
    geo = _Geometry(size / 2 + jx, size / 2 + jy, R, disc, disc_r, fovea)
    yy, xx = np.ogrid[0:size, 0:size]
    u, v = (xx.astype(np.float32) - geo.cx) / R, (yy.astype(np.float32) - geo.cy) / R
    refl = _background(rng, geo, pigment.astype(np.float32), u, v)
    layers = {name: Image.new("L", (size, size), 0) for name in _COLOURS}
    draws = {name: ImageDraw.Draw(im) for name, im in layers.items()}
    veins, arteries = _vessel_tree(rng, geo)
    for name, vessels in (("vein", veins), ("artery", arteries)):
        for pts, width, _ in vessels:
            for j in range(0, len(pts) - 1, 6):  # taper: each chunk of the polyline a bit thinner
                w = max(1, round(width * (1 - 0.45 * j / len(pts))))
                draws[name].line(pts[j : j + 7], fill=255, width=w, joint="curve")
    for _ in range(rng.integers(3, 13) if rng.random() < 0.25 else 0):  # drusen: distractors
        xy = geo.at(geo.fovea[0] + rng.normal(0, 0.2), geo.fovea[1] + rng.normal(0, 0.2))
        _dot(draws["drusen"], rng, xy, max(0.6, R * rng.uniform(0.01, 0.02)), rng.uniform(90, 150))
    for _ in range(rng.integers(1, 4) if rng.random() < 0.3 else 0):  # dark smudges: lens dust
        _dot(draws["dust"], rng, geo.spot(rng), R * rng.uniform(0.03, 0.06), rng.uniform(70, 120))
    _draw_lesions(np.random.default_rng([seed, 2, eye.index]), eye.grade, geo, veins, draws)
    for name, colour in _COLOURS.items():
        im = layers[name]
        if name in ("cotton", "dust"):  # fluffy / out of focus
            im = im.filter(ImageFilter.GaussianBlur(0.025 * R))
        if box := im.getbbox():  # blend only where the layer has ink: most layers are small
            sub = refl[box[1] : box[3], box[0] : box[2]]
            alpha = np.asarray(im.crop(box), np.float32)[..., None] / 255
            sub += (np.float32(colour) - sub) * alpha
    # Nuisance: brightness, vignette, gradient, colour cast, noise, blur, rotation, flips (and
    # JPEG quality in _write_eye) vary per image so the grade is not the only thing that changes.
    phi = rng.uniform(0, 2 * math.pi)
    illum = rng.uniform(0.7, 1.15) * (1 - rng.uniform(0.2, 0.42) * (u**2 + v**2))
    illum = illum * (1 + rng.uniform(0, 0.2) * (u * math.cos(phi) + v * math.sin(phi)))
    gain = rng.uniform((0.9, 0.8, 0.7), (1.1, 1.2, 1.3)).astype(np.float32)
    img = refl * illum[..., None] * gain
    img += rng.uniform(0, 5) * rng.standard_normal(img.shape, dtype=np.float32)
    inside = np.clip((1 - np.sqrt(u**2 + v**2)) * R, 0, 1)[..., None]  # 1-px soft rim, black out
    out = Image.fromarray(np.clip(img * inside, 0, 255).astype(np.uint8), mode="RGB")
    out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0) * size / 256))
    out = out.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR)
    if (eye.side == "left") != (rng.random() < 0.1):  # left eyes mirrored; some camera flips
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.1:
        out = out.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return out


def _write_eye(task: tuple[Eye, int, int, Path]) -> None:
    eye, size, seed, folder = task
    path = folder / f"{eye.image_id}.jpeg"
    quality = int(np.random.default_rng([seed, 4, eye.index]).integers(65, 96))
    try:
        render_fundus(eye, size, seed).save(path, format="JPEG", quality=quality)
    except OSError as exc:
        raise RetinaError(f"cannot write {path}: {exc}; free space or pick another --out") from exc


def generate(out: Path, n: int, size: int, seed: int, workers: int | None = None,
             progress: bool = False, *, overwrite: bool = False) -> Path:  # fmt: skip
    """Write n synthetic images of `size` px in the Kaggle layout into `out`; return `out`.

    Images first, the labels CSV last (temp file + rename), so an interrupted run never leaves a
    CSV naming missing images. `workers` defaults to every core; the output does not depend on it.
    """
    out = Path(out)
    checks = [
        (n < 2, f"--n {n} is too small: a patient has two eyes, pass --n 2 or more"),
        (not 16 <= size <= 4096, f"--size {size} is out of range: pass 16 to 4096"),
        (seed < 0, f"--seed {seed} is negative: pass 0 or another non-negative integer"),
        (workers is not None and workers < 1, f"--workers {workers} must be at least 1"),
        (out.exists() and not out.is_dir(), f"--out {out} is a file: pass a folder path"),
        ((out / LABELS_CSV).exists() and not overwrite, f"{out / LABELS_CSV} already exists: "
         "pass --overwrite to replace that dataset, or choose another --out"),
    ]  # fmt: skip
    for failed, message in checks:
        if failed:
            raise RetinaError(message)
    eyes = plan_eyes(n, seed)
    folder, labels = out / "train", out / LABELS_CSV
    try:
        folder.mkdir(parents=True, exist_ok=True)
        labels.unlink(missing_ok=True)  # --overwrite: no old CSV may name half-rewritten images
    except OSError as exc:
        raise RetinaError(f"cannot write into {out}: {exc}; choose another --out") from exc
    tasks = [(eye, size, seed, folder) for eye in eyes]
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    with tqdm(total=n, unit="img", desc="synthetic", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                _write_eye(task)
                bar.update()
        else:  # fork: workers need no `if __name__ == "__main__"` guard in the caller's script
            with worker_pool(workers) as pool:
                for _ in pool.imap_unordered(_write_eye, tasks, chunksize=8):
                    bar.update()
    tmp = labels.with_name(f".{LABELS_CSV}.{os.getpid()}.tmp")
    tmp.write_text("image,level\n" + "".join(f"{e.image_id},{e.grade}\n" for e in eyes))
    os.replace(tmp, labels)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    raw = argparse.RawDescriptionHelpFormatter  # --help shows the docstring as written
    parser = argparse.ArgumentParser(
        prog="python -m retina.synthetic", description=__doc__, formatter_class=raw
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    parser.add_argument("--n", type=int, default=1000, help="number of images (two per patient)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset in --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    generate(a.out, a.n, a.size, a.seed, a.workers, not a.quiet, overwrite=a.overwrite)
    if not a.quiet:
        counts = np.bincount([eye.grade for eye in plan_eyes(a.n, a.seed)], minlength=5).tolist()
        print(f"wrote {a.n} images of {a.size} px to {a.out}; images per grade 0-4: {counts}")
    return 0


if __name__ == "__main__":
    run_command(main)
