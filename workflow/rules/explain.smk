# CLIP Surgery (Li et al., 2025): explanation maps, multimodal visualisation, evaluation on masks.


rule explain_maps:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/maps.npz",
    params:
        model=model_config,
        explain=CFG["explain"],
    threads: 4
    resources:
        gpu=1,
        batch_size=CFG["compute"]["batch_size"],
        num_workers=CFG["compute"]["num_workers"],
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/explain_maps/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/explain_maps/{model}/{dataset}.tsv"
    script:
        "../../scripts/explain_maps.py"


rule explain_figures:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        maps=rules.explain_maps.output[0],
    output:
        overlays=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/explain/overlays.png",
            caption="../report/explain_overlays.rst",
            category="CLIP Surgery",
            subcategory="{model}",
        ),
        prompts=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/explain/prompt_overlays.png",
            caption="../report/explain_prompts.rst",
            category="CLIP Surgery",
            subcategory="{model}",
        ),
        segmentation=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/explain/segmentation.png",
            caption="../report/explain_segmentation.rst",
            category="CLIP Surgery",
            subcategory="{model}",
        ),
    params:
        model=model_config,
        explain=CFG["explain"],
        random_weights=random_weights,
    threads: 4
    resources:
        gpu=1,
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/explain_figures/{model}/{dataset}.log",
    script:
        "../../scripts/explain_figures.py"


rule explain_evaluation:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        maps=rules.explain_maps.output[0],
    output:
        per_map=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/per_map.parquet",
        summary=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/summary.csv",
        segmentation=f"{RESULTS}/explain/model={{model}}/dataset={{dataset}}/segmentation.csv",
        figure=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/explain/evaluation.png",
            caption="../report/explain_evaluation.rst",
            category="CLIP Surgery",
            subcategory="{model}",
        ),
        curves=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/explain/deletion_insertion.png",
            caption="../report/explain_deletion.rst",
            category="CLIP Surgery",
            subcategory="{model}",
        ),
    params:
        model=model_config,
        explain=CFG["explain"],
        random_weights=random_weights,
    threads: 4
    resources:
        gpu=1,
        batch_size=CFG["compute"]["batch_size"],
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/explain_evaluation/{model}/{dataset}.log",
    script:
        "../../scripts/explain_evaluation.py"
