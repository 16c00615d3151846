"""The parts of the GPU acceptance run (benches/gpu_check.py), one module each: `install`
(setup, environment), `train`, `generation`, `throughput`; with the run's sizes (`plan`), the
part runner and subprocesses (`running`) and device helpers (`devices`)."""
