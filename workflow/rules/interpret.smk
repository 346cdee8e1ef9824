# Head-level interpretation: decomposition + TEXTSPAN (Gandelsman et al.), CLIP-InterpreT (Madasu et al.).
from cliplens.interpretation_job import decomposable, pool_file, pool_key, properties_file

INTERPRET = f"{RESULTS}/interpret"
INTERPRET_CFG = CFG["interpret"]
QUERIES = INTERPRET_CFG["queries"]
QUERY_IMAGES = len(QUERIES["images"]) or 2
POOL_EMBEDDINGS = f"{RESULTS}/text/model={{model}}/pool-{pool_key(INTERPRET_CFG['textspan']['pool'])}.parquet"
HAS_MASKS = CFG["dataset"]["kind"] == "coco128"
HAS_LABELS = CFG["dataset"]["kind"] != "folder" or CFG["dataset"]["labels_csv"] is not None


def interpret_figure(name):
    """A figure of this file's rules, registered in the report."""
    return f"{FIGURES}/model={{model}}/dataset={{dataset}}/interpret/{name}.png"


def topic_map_names():
    return [f"topic_maps/image{i}_text{j}" for i in range(QUERY_IMAGES) for j in range(len(QUERIES["texts"]))]


def contrastive_map_names():
    return [f"contrastive_maps/image{i}_pair{j}" for i in range(QUERY_IMAGES) for j in range(len(QUERIES["contrastive"]))]


def interpret_figures(model):
    """Every figure of the head-level interpretation of one model on the configured dataset."""
    names = ["mean_ablation", "textspan", "head_properties", "interpretability_metrics"]
    names += ["property_neighbours", "head_image_neighbours", "head_text_neighbours"]
    names += topic_map_names() + contrastive_map_names()
    if HAS_LABELS:
        names.append("segmentation")
    if HAS_MASKS:
        names.append("segmentation_evaluation")
    return [interpret_figure(name).format(model=model, dataset=DATASET) for name in names]


def interpret_report(name, caption):
    return report(interpret_figure(name), caption=f"../report/interpret_{caption}.rst", category="Head-level interpretation", subcategory="{model}")


rule embed_text_pool:
    input:
        pool=pool_file(INTERPRET_CFG["textspan"]),
    output:
        POOL_EMBEDDINGS,
    params:
        model=model_config,
        templates=INTERPRET_CFG["textspan"]["templates"],
    resources:
        gpu=1,
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/embed_text_pool/{model}.log",
    script:
        "../../scripts/interpret_text_pool.py"


rule embed_properties:
    input:
        properties=properties_file(INTERPRET_CFG["properties"]),
    output:
        f"{RESULTS}/text/model={{model}}/properties.parquet",
    params:
        model=model_config,
    resources:
        gpu=1,
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/embed_properties/{model}.log",
    script:
        "../../scripts/interpret_properties.py"


rule decompose_images:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        directory(f"{INTERPRET}/model={{model}}/dataset={{dataset}}/contributions"),
    params:
        model=model_config,
        max_images=INTERPRET_CFG["max_images"],
        head_layers=None if INTERPRET_CFG["store_all_heads"] else INTERPRET_CFG["layers"],
        dtype=CFG["embedding"]["dtype"],
    resources:
        gpu=1,
        batch_size=CFG["compute"]["batch_size"],
        num_workers=CFG["compute"]["num_workers"],
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/decompose_images/{model}/{dataset}.log",
    benchmark:
        "benchmarks/rules/decompose_images/{model}/{dataset}.tsv"
    script:
        "../../scripts/interpret_decompose.py"


rule mean_ablation:
    input:
        store=rules.decompose_images.output[0],
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        labels=f"{RESULTS}/text/model={{model}}/dataset={{dataset}}/labels.parquet",
    output:
        table=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/mean_ablation.csv",
        figure=interpret_report("mean_ablation", "mean_ablation"),
    params:
        random_weights=random_weights,
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/mean_ablation/{model}/{dataset}.log",
    script:
        "../../scripts/interpret_mean_ablation.py"


rule textspan_heads:
    input:
        store=rules.decompose_images.output[0],
        pool=POOL_EMBEDDINGS,
    output:
        table=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/textspan.csv",
        figure=interpret_report("textspan", "textspan"),
    params:
        layers=INTERPRET_CFG["layers"],
        top_m=INTERPRET_CFG["textspan"]["top_m"],
        rank=INTERPRET_CFG["textspan"]["rank"],
        random_weights=random_weights,
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/textspan_heads/{model}/{dataset}.log",
    script:
        "../../scripts/interpret_textspan.py"


rule head_properties:
    input:
        spans=rules.textspan_heads.output.table,
        pool=POOL_EMBEDDINGS,
        properties=rules.embed_properties.output[0],
    output:
        labels=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/head_labels.csv",
        metrics=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/interpretability_metrics.csv",
        figure=interpret_report("head_properties", "head_properties"),
        metrics_figure=interpret_report("interpretability_metrics", "metrics"),
    params:
        weighting=INTERPRET_CFG["label_weighting"],
        n_boot=INTERPRET_CFG["n_boot"],
        seed=CFG["stats"]["seed"],
        random_weights=random_weights,
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/head_properties/{model}/{dataset}.log",
    script:
        "../../scripts/interpret_head_properties.py"


rule interpret_queries:
    input:
        store=rules.decompose_images.output[0],
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        labels=rules.head_properties.output.labels,
    output:
        properties=interpret_report("property_neighbours", "property_neighbours"),
        head_images=interpret_report("head_image_neighbours", "head_image_neighbours"),
        head_texts=interpret_report("head_text_neighbours", "head_text_neighbours"),
        topic=[interpret_report(name, "topic_maps") for name in topic_map_names()],
        contrastive=[interpret_report(name, "contrastive_maps") for name in contrastive_map_names()],
    params:
        model=model_config,
        queries=QUERIES,
        k=INTERPRET_CFG["neighbours_k"],
        layers=INTERPRET_CFG["layers"],
        templates=INTERPRET_CFG["textspan"]["templates"],
        random_weights=random_weights,
    resources:
        gpu=1,
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/interpret_queries/{model}/{dataset}.log",
    script:
        "../../scripts/interpret_queries.py"


rule decomposition_segmentation:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        labels=f"{RESULTS}/text/model={{model}}/dataset={{dataset}}/labels.parquet",
    output:
        maps=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/segmentation/maps.npz",
        figure=interpret_report("segmentation", "segmentation"),
    params:
        model=model_config,
        max_images=INTERPRET_CFG["max_images"],
        layers=INTERPRET_CFG["layers"],
        segmentation=INTERPRET_CFG["segmentation"],
        random_weights=random_weights,
    resources:
        gpu=1,
        batch_size=CFG["compute"]["batch_size"],
        num_workers=CFG["compute"]["num_workers"],
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/decomposition_segmentation/{model}/{dataset}.log",
    script:
        "../../scripts/interpret_segmentation.py"


rule decomposition_segmentation_evaluation:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        maps=rules.decomposition_segmentation.output.maps,
    output:
        per_map=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/segmentation/per_map.parquet",
        summary=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/segmentation/summary.csv",
        segmentation=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/segmentation/segmentation.csv",
        figure=interpret_report("segmentation_evaluation", "segmentation_evaluation"),
    params:
        resize_mode=INTERPRET_CFG["segmentation"]["resize_mode"],
        n_boot=INTERPRET_CFG["n_boot"],
        random_weights=random_weights,
    conda:
        "../envs/cliplens.yaml"
    log:
        "logs/decomposition_segmentation_evaluation/{model}/{dataset}.log",
    script:
        "../../scripts/interpret_segmentation_evaluation.py"
