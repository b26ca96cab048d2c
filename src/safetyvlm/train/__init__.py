"""Training: one LoRA run skeleton under SFT, DPO and GRPO, the base pretraining, several processes.

    run.py          LoraRun: seed, load, LoRA, the Mllama checkpointing fix, atomic outputs, adapter + merged,
                    train_log / metrics / config records; PreferenceRun: what DPO and GRPO add
    sft.py          FinetuneConfig + SFTRun (TRL's SFTTrainer): the finetune stage
    dpo.py          DPOParams + DPORun (TRL's DPOTrainer) on the grpo-pairs stage's pairs
    grpo.py         GRPOParams + GRPORun (TRL's GRPOTrainer) with the verifiable rewards (prefs/rewards.py)
    preferences.py  PrefsConfig (params.yaml grpo:) and train_preferences: the run grpo.method picks
    pretrain.py     BaseTrainConfig + train_bases: a preset's base from scratch (a plain loop, rendered data)
    base.py         the base stage: shipped weights (hash-checked), a fresh base, or a recorded checkpoint
    distributed.py  torchrun relaunch, rank-0-only outputs, DDP / FSDP arguments
"""
