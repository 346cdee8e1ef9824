# Ground truth: the planted-concept world, a CLIP the workflow trains on it, and every line scored against
# the truth (docs/groundtruth.md).
GROUNDTRUTH = f"{RESULTS}/groundtruth/model={{model}}/dataset={{dataset}}"
GROUNDTRUTH_FIGURES = f"{FIGURES}/model={{model}}/dataset={{dataset}}/groundtruth"
GROUNDTRUTH_REPORT = {"category": "Ground truth", "subcategory": "{model}"}


from cliplens.planted import DISTRACTORS as GROUNDTRUTH_DISTRACTORS


rule train_planted_model:
    output:
        checkpoint=f"{RESULTS}/models/{{model}}/checkpoint.pt",
        card=f"{RESULTS}/models/{{model}}/model_card.json",
        figure=report(
            f"{FIGURES}/model={{model}}/training_curve.png", caption="../report/training_curve.rst", **GROUNDTRUTH_REPORT
        ),
    log:
        "logs/train_planted_model/{model}.log",
    benchmark:
        "logs/benchmarks/train_planted_model/{model}.tsv"
    conda:
        "../envs/cliplens.yaml"
    threads: MODEL_JOB_THREADS  # one job that every other waits for: all the threads it may have
    resources:
        gpu=gpu_slots,
        device=model_device,
    params:
        model=model_config,
    script:
        "../../scripts/train_planted_model.py"


rule groundtruth_perturbation:
    input:
        unpack(family_embeddings),
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        table=f"{GROUNDTRUTH}/perturbation.csv",
        expectations=f"{GROUNDTRUTH}/perturbation_expectations.csv",
        figure=report(
            f"{GROUNDTRUTH_FIGURES}/perturbation.png", caption="../report/groundtruth_perturbation.rst", **GROUNDTRUTH_REPORT
        ),
    log:
        "logs/groundtruth_perturbation/{model}/{dataset}.log",
    conda:
        "../envs/cliplens.yaml"
    resources:
        device=model_device,  # the model only encodes the attribute texts: no GPU slot held
    params:
        model=model_config,
        embeddings=embedding_params,
        random_weights=random_weights,
    script:
        "../../scripts/groundtruth_perturbation.py"


rule groundtruth_maps:
    input:
        weights=model_weights,
    output:
        per_object=f"{GROUNDTRUTH}/maps_per_object.parquet",
        summary=f"{GROUNDTRUTH}/maps.csv",
        expectations=f"{GROUNDTRUTH}/maps_expectations.csv",
        figure=report(f"{GROUNDTRUTH_FIGURES}/maps.png", caption="../report/groundtruth_maps.rst", **GROUNDTRUTH_REPORT),
    log:
        "logs/groundtruth_maps/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/groundtruth_maps/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
        batch_size=CFG["compute"]["batch_size"],
    params:
        model=model_config,
        dataset=lambda wildcards: config_slice("dataset", "split", "world"),
        explain=config_slice("explain", "methods", "surgery_depth", "resnet_surgery", "evaluation"),
        interpret=config_slice("interpret", "layers", "constant_split"),
        random_weights=random_weights,
    script:
        "../../scripts/groundtruth_maps.py"


rule groundtruth_heads:
    input:
        weights=model_weights,
    output:
        heads=f"{GROUNDTRUTH}/heads.csv",
        ablation=f"{GROUNDTRUTH}/heads_ablation.csv",
        spurious=f"{GROUNDTRUTH}/spurious_cue.csv",
        expectations=f"{GROUNDTRUTH}/heads_expectations.csv",
        figure=report(f"{GROUNDTRUTH_FIGURES}/heads.png", caption="../report/groundtruth_heads.rst", **GROUNDTRUTH_REPORT),
    log:
        "logs/groundtruth_heads/{model}/{dataset}.log",
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
    params:
        model=lambda wildcards: {**model_config(wildcards), "world": CFG["dataset"]["world"]},
        textspan=CFG["interpret"]["textspan"],
        distractors=GROUNDTRUTH_DISTRACTORS,
        random_weights=random_weights,
    script:
        "../../scripts/groundtruth_heads.py"


rule groundtruth_report:
    input:
        perturbation=rules.groundtruth_perturbation.output.expectations,
        maps=rules.groundtruth_maps.output.expectations,
        heads=rules.groundtruth_heads.output.expectations,
        sanity=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/sanity_check.csv",
    output:
        table=f"{GROUNDTRUTH}/expectations.csv",
        markdown=report(f"{GROUNDTRUTH}/expectations.md", caption="../report/groundtruth_report.rst", **GROUNDTRUTH_REPORT),
    log:
        "logs/groundtruth_report/{model}/{dataset}.log",
    conda:
        "../envs/cliplens.yaml"
    params:
        random_weights=random_weights,
    script:
        "../../scripts/groundtruth_report.py"
