# Perturbation analysis (Ameh, 2025): grid plan, previews, statistics, semantic drift, figures.
# Figures are drawn by one job per dataset for the pictures (previews, and every model's
# susceptibility galleries: the one job that perturbs images for figures, each image once) and
# one torch-free job per model x dataset for the plots. A job per family would add only its
# start-up; a change of one family's parameters reruns these jobs through their inputs and params.
PERTURBATION_FIGURES = f"{FIGURES}/model={{model}}/dataset={{dataset}}/perturbation"
PERTURBATION_REPORT = {"category": "Perturbations", "subcategory": "{model}"}
SEVERITY_METRICS = ["alignment", "top1", "self_similarity"]


rule perturbation_plan:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        f"{PERTURBATION}/dataset={{dataset}}/plan.parquet",
    log:
        "logs/perturbation_plan/{dataset}.log",
    benchmark:
        "logs/benchmarks/perturbation_plan/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    params:
        grid=CFG["perturbation"],
    script:
        "../../scripts/perturbation_plan.py"


rule perturbation_galleries:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        top_k=expand(f"{PERTURBATION}/model={{model}}/dataset={{{{dataset}}}}/top_k.csv", model=MODELS if LABELLED else []),
        per_image=expand(
            f"{PERTURBATION}/model={{model}}/dataset={{{{dataset}}}}/per_image.parquet", model=MODELS if LABELLED else []
        ),
    output:
        **{
            f"preview_{family}": report(
                f"{FIGURES}/dataset={{dataset}}/perturbation/preview_{family}.png",
                caption="../report/perturbation_preview.rst",
                category="Perturbations",
                subcategory="Previews",
                labels={"family": family},
            )
            for family in FAMILIES
        },
        **{
            f"susceptibility_{model}_{family}": report(
                f"{FIGURES}/model={model}/dataset={{dataset}}/perturbation/susceptibility_{family}.png",
                caption="../report/susceptibility_gallery.rst",
                category="Perturbations",
                subcategory=model,
                labels={"figure": "susceptibility", "family": family},
            )
            for model in (MODELS if LABELLED else [])
            for family in FAMILIES
        },
    log:
        "logs/perturbation_galleries/{dataset}.log",
    benchmark:
        "logs/benchmarks/perturbation_galleries/{dataset}.tsv"
    priority: LONG_CHAIN_PRIORITY
    conda:
        "../envs/cliplens.yaml"
    params:
        models={model: has_random_weights(model) for model in (MODELS if LABELLED else [])},
        families={family: family_config(family) for family in FAMILIES},
        backend=CFG["perturbation"]["backend"],
        image_size=224,
        gallery_pdf=CFG["figures"]["gallery_pdf"],
    script:
        "../../scripts/perturbation_galleries.py"


rule embed_drift_labels:
    input:
        weights=model_weights,
    output:
        f"{RESULTS}/text/model={{model}}/drift={{label_set}}.parquet",
    log:
        "logs/embed_drift_labels/{model}/{label_set}.log",
    benchmark:
        "logs/benchmarks/embed_drift_labels/{model}/{label_set}.tsv"
    priority: LONG_CHAIN_PRIORITY
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
    params:
        model=model_config,
        prompts=lambda wc: CFG["drift"]["label_sets"][wc.label_set],
    script:
        "../../scripts/embed_drift_labels.py"


rule perturbation_stats:
    input:
        unpack(family_embeddings),
        labels=f"{RESULTS}/text/model={{model}}/dataset={{dataset}}/labels.parquet",
        drift=expand(f"{RESULTS}/text/model={{{{model}}}}/drift={{label_set}}.parquet", label_set=LABEL_SETS),
    output:
        per_image=f"{PERTURBATION}/model={{model}}/dataset={{dataset}}/per_image.parquet",
        aggregate=f"{PERTURBATION}/model={{model}}/dataset={{dataset}}/aggregate.parquet",
        aggregate_csv=f"{PERTURBATION}/model={{model}}/dataset={{dataset}}/aggregate.csv",
        susceptibility=f"{PERTURBATION}/model={{model}}/dataset={{dataset}}/susceptibility.parquet",
        top_k=f"{PERTURBATION}/model={{model}}/dataset={{dataset}}/top_k.csv",
        drift=expand(
            f"{PERTURBATION}/model={{{{model}}}}/dataset={{{{dataset}}}}/drift_{{label_set}}.parquet", label_set=LABEL_SETS
        ),
        flips=expand(
            f"{PERTURBATION}/model={{{{model}}}}/dataset={{{{dataset}}}}/label_flips_{{label_set}}.csv", label_set=LABEL_SETS
        ),
    log:
        "logs/perturbation_stats/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/perturbation_stats/{model}/{dataset}.tsv"
    priority: LONG_CHAIN_PRIORITY
    conda:
        "../envs/cliplens.yaml"
    params:
        stats=CFG["stats"],
        embeddings=embedding_params,
        families=FAMILIES,
        label_sets=LABEL_SETS,
    script:
        "../../scripts/perturbation_stats.py"


rule perturbation_figures:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        aggregate=rules.perturbation_stats.output.aggregate,
        drift=expand(
            f"{PERTURBATION}/model={{{{model}}}}/dataset={{{{dataset}}}}/drift_{{label_set}}.parquet", label_set=LABEL_SETS
        ),
    output:
        **{
            f"severity_{metric}": report(
                f"{PERTURBATION_FIGURES}/severity_{metric}.png",
                caption="../report/severity_curves.rst",
                labels={"figure": f"{metric} over severity", "family": "all"},
                **PERTURBATION_REPORT,
            )
            for metric in SEVERITY_METRICS
        },
        **{
            f"{kind}_{family}": report(
                f"{PERTURBATION_FIGURES}/{kind}_{family}.png",
                caption=f"../report/{kind}.rst",
                category="Semantic drift",
                subcategory="{model}",
                labels={"figure": kind, "family": family},
            )
            for kind in ("drift", "trajectories")
            for family in FAMILIES
        },
        heatmap=report(
            f"{PERTURBATION_FIGURES}/drop_heatmaps.png",
            caption="../report/drop_heatmaps.rst",
            labels={"figure": "drop heatmaps", "family": "all"},
            **PERTURBATION_REPORT,
        ),
    log:
        "logs/perturbation_figures/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/perturbation_figures/{model}/{dataset}.tsv"
    priority: LONG_CHAIN_PRIORITY
    conda:
        "../envs/cliplens.yaml"
    params:
        random_weights=random_weights,
        families=FAMILIES,
        metrics=SEVERITY_METRICS,
        drift_images=CFG["drift"]["images"],
    script:
        "../../scripts/perturbation_figures.py"


rule model_comparison:
    input:
        aggregates=expand(f"{PERTURBATION}/model={{model}}/dataset={{{{dataset}}}}/aggregate.parquet", model=MODELS),
    output:
        report(
            expand(f"{FIGURES}/dataset={{{{dataset}}}}/model_comparison_{{metric}}.png", metric=["alignment", "top1"]),
            caption="../report/model_comparison.rst",
            category="Perturbations",
            subcategory="Model comparison",
        ),
    log:
        "logs/model_comparison/{dataset}.log",
    benchmark:
        "logs/benchmarks/model_comparison/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    params:
        random_weights=any(has_random_weights(model) for model in MODELS),
    script:
        "../../scripts/model_comparison.py"
