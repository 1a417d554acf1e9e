"""Side-by-side benchmark of the course pipeline and this harness: `python -m retina.bench`.

    python -m retina.bench [--quick] [--json bench.json]            # make bench
    python -m retina.bench --gpu [--quick] [--json bench-gpu.json]  # make bench-gpu

Modules: `workspace` (generated JPEGs, datasets, cache builds, timing helpers), `loaders`
(course Dataset/DataLoader against our BatchLoader), `training` (bare loop, our epoch, the
course epoch), `trials` (Ray Tune's cost per trial and a trial's peak RSS, measured by
`python -m study.bench_trials` in a separate process), `predict` (predict's images/s over a
bare forward pass), `gpu` (resnet18/50 at 512 px, alone and four trials sharing one GPU) and
`report` (machine, table, JSON).
"""
