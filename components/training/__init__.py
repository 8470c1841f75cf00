"""Training: PEFT fine-tuning, padding-free packing, exact resume, distributed runs.

Entry points:
- ``adapter.train_adapter(spec, dataset_dir, method_name, out_dir)``: one of training.methods
  (LoRA, DoRA, rsLoRA, IA3, full; QLoRA on a GPU) into a Model artifact.
- ``scratch.train_from_scratch(spec, dataset_dir, out_dir)``: stage 4, a small Llama and its tokenizer.
- ``python -m aicd.components.training`` (also under torchrun): the same, from the command line.
- ``launcher.trainjob_manifest`` / ``launcher.launch_trainjob``: the cluster run as a Kubeflow TrainJob.
- ``loop.run_loop(model, plan, cfg, accelerator, pad_id)``: the loop itself (benchmarks call it).
"""
