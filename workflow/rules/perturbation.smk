# Perturbation analysis (Ameh, 2025): grid plan, previews, statistics, semantic drift, figures.


rule perturbation_plan:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        f"{PERTURBATION}/dataset={{dataset}}/plan.parquet",
    log:
        "logs/perturbation_plan/{dataset}.log",
    conda:
        "../envs/cliplens.yaml"
    params:
        grid=CFG["perturbation"],
    script:
        "../../scripts/perturbation_plan.py"


rule perturbation_preview:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        report(
            f"{FIGURES}/dataset={{dataset}}/perturbation/preview_{{family}}.png",
            caption="../report/perturbation_preview.rst",
            category="Perturbations",
            subcategory="Previews",
        ),
    log:
        "logs/perturbation_preview/{dataset}/{family}.log",
    conda:
        "../envs/cliplens.yaml"
    params:
        perturbation=perturbation_config,
    script:
        "../../scripts/perturbation_preview.py"


rule embed_drift_labels:
    input:
        weights=model_weights,
    output:
        f"{RESULTS}/text/model={{model}}/drift={{label_set}}.parquet",
    log:
        "logs/embed_drift_labels/{model}/{label_set}.log",
    conda:
        "../envs/cliplens.yaml"
    threads: 4
    resources:
        gpu=1,
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
        aggregate=rules.perturbation_stats.output.aggregate,
    output:
        heatmap=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/perturbation/drop_heatmaps.png",
            caption="../report/drop_heatmaps.rst",
            category="Perturbations",
            subcategory="{model}",
        ),
        curves=report(
            expand(
                f"{FIGURES}/model={{{{model}}}}/dataset={{{{dataset}}}}/perturbation/severity_{{metric}}.png",
                metric=["alignment", "top1", "self_similarity"],
            ),
            caption="../report/severity_curves.rst",
            category="Perturbations",
            subcategory="{model}",
        ),
    log:
        "logs/perturbation_figures/{model}/{dataset}.log",
    conda:
        "../envs/cliplens.yaml"
    params:
        random_weights=random_weights,
    script:
        "../../scripts/perturbation_figures.py"


rule perturbation_family_figures:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        per_image=rules.perturbation_stats.output.per_image,
        top_k=rules.perturbation_stats.output.top_k,
        drift=expand(
            f"{PERTURBATION}/model={{{{model}}}}/dataset={{{{dataset}}}}/drift_{{label_set}}.parquet", label_set=LABEL_SETS
        ),
    output:
        gallery=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/perturbation/susceptibility_{{family}}.png",
            caption="../report/susceptibility_gallery.rst",
            category="Perturbations",
            subcategory="{model}",
        ),
        drift=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/perturbation/drift_{{family}}.png",
            caption="../report/drift.rst",
            category="Semantic drift",
            subcategory="{model}",
        ),
        trajectories=report(
            f"{FIGURES}/model={{model}}/dataset={{dataset}}/perturbation/trajectories_{{family}}.png",
            caption="../report/trajectories.rst",
            category="Semantic drift",
            subcategory="{model}",
        ),
    log:
        "logs/perturbation_family_figures/{model}/{dataset}/{family}.log",
    conda:
        "../envs/cliplens.yaml"
    params:
        random_weights=random_weights,
        perturbation=perturbation_config,
        image_size=224,
        drift_images=CFG["drift"]["images"],
    script:
        "../../scripts/perturbation_family_figures.py"


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
    conda:
        "../envs/cliplens.yaml"
    params:
        random_weights=any(m["source"] == "random" for m in CFG["model_grid"].values()),
    script:
        "../../scripts/model_comparison.py"
