# CLIP Surgery (Li et al., 2025): explanation maps, multimodal visualisation, evaluation, sanity check.
EXPLAIN_FIGURES = f"{FIGURES}/model={{model}}/dataset={{dataset}}/explain"
EXPLAIN_REPORT = {"category": "CLIP Surgery", "subcategory": "{model}"}


GEOMETRY = ("image_size", "resize_mode")
MAP_SETTINGS = ("methods", "surgery_depth", "resnet_surgery", "templates", *GEOMETRY)


rule explain_maps:
    input:
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/maps.npz",
    log:
        "logs/explain_maps/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/explain_maps/{model}/{dataset}.tsv"
    priority: LONG_CHAIN_PRIORITY
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
        batch_size=CFG["compute"]["batch_size"],
        num_workers=CFG["compute"]["num_workers"],
    params:
        model=model_config,
        explain=config_slice("explain", *MAP_SETTINGS, "max_images"),
    script:
        "../../scripts/explain_maps.py"


rule explain_figures:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        maps=rules.explain_maps.output[0],
    output:
        overlays=report(f"{EXPLAIN_FIGURES}/overlays.png", caption="../report/explain_overlays.rst", **EXPLAIN_REPORT),
        segmentation=report(f"{EXPLAIN_FIGURES}/segmentation.png", caption="../report/explain_segmentation.rst", **EXPLAIN_REPORT),
    log:
        "logs/explain_figures/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/explain_figures/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    params:
        explain=config_slice("explain", "figure_images", *GEOMETRY),
        random_weights=random_weights,
        gallery_pdf=CFG["figures"]["gallery_pdf"],
    script:
        "../../scripts/explain_figures.py"


rule explain_prompt_maps:
    input:
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        figure=report(f"{EXPLAIN_FIGURES}/prompt_overlays.png", caption="../report/explain_prompts.rst", **EXPLAIN_REPORT),
        points=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/prompt_points.csv",
    log:
        "logs/explain_prompt_maps/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/explain_prompt_maps/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
    params:
        model=model_config,
        explain=config_slice("explain", *MAP_SETTINGS, "prompts", "max_images", "figure_images"),
        random_weights=random_weights,
        gallery_pdf=CFG["figures"]["gallery_pdf"],
    script:
        "../../scripts/explain_prompt_maps.py"


rule explain_evaluation:
    input:
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        maps=rules.explain_maps.output[0],
    output:
        per_map=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/per_map.parquet",
        summary=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/summary.csv",
        segmentation=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/segmentation.csv",
        figure=report(f"{EXPLAIN_FIGURES}/evaluation.png", caption="../report/explain_evaluation.rst", **EXPLAIN_REPORT),
        curves=report(f"{EXPLAIN_FIGURES}/deletion_insertion.png", caption="../report/explain_deletion.rst", **EXPLAIN_REPORT),
    log:
        "logs/explain_evaluation/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/explain_evaluation/{model}/{dataset}.tsv"
    priority: LONG_CHAIN_PRIORITY
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
        batch_size=CFG["compute"]["batch_size"],
    params:
        model=model_config,
        explain=config_slice("explain", "evaluation", *GEOMETRY),
        random_weights=random_weights,
    script:
        "../../scripts/explain_evaluation.py"


rule explain_sanity_check:
    input:
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        table=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/sanity_check.csv",
        figure=report(f"{EXPLAIN_FIGURES}/sanity_check.png", caption="../report/explain_sanity_check.rst", **EXPLAIN_REPORT),
    log:
        "logs/explain_sanity_check/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/explain_sanity_check/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
    params:
        model=model_config,
        explain=config_slice("explain", *MAP_SETTINGS, "sanity_check"),
        random_weights=random_weights,
    script:
        "../../scripts/explain_sanity_check.py"
