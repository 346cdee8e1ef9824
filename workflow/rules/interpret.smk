# Head-level interpretation: decomposition + TEXTSPAN (Gandelsman et al.), CLIP-InterpreT (Madasu et al.).
from cliplens.planning import output_name, pool_file, pool_key, properties_file, query_map_names

INTERPRET = f"{RESULTS}/interpret"
INTERPRET_CFG = CFG["interpret"]
INTERPRET_FIGURES = f"{FIGURES}/model={{model}}/dataset={{dataset}}/interpret"
TOPIC_MAPS, CONTRASTIVE_MAPS = query_map_names(INTERPRET_CFG["queries"])
POOL_EMBEDDINGS = f"{RESULTS}/text/model={{model}}/pool-{pool_key(INTERPRET_CFG['textspan']['pool'])}.parquet"
REPORT = {"category": "Head-level interpretation", "subcategory": "{model}"}


rule embed_text_pool:
    input:
        weights=model_weights,
        pool=pool_file(INTERPRET_CFG["textspan"]),
    output:
        POOL_EMBEDDINGS,
    log:
        "logs/embed_text_pool/{model}.log",
    benchmark:
        "logs/benchmarks/embed_text_pool/{model}.tsv"
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
    params:
        model=model_config,
        templates=INTERPRET_CFG["textspan"]["templates"],
    script:
        "../../scripts/embed_text_pool.py"


rule embed_properties:
    input:
        weights=model_weights,
        properties=properties_file(INTERPRET_CFG["properties"]),
    output:
        f"{RESULTS}/text/model={{model}}/properties.parquet",
    log:
        "logs/embed_properties/{model}.log",
    benchmark:
        "logs/benchmarks/embed_properties/{model}.tsv"
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
    params:
        model=model_config,
    script:
        "../../scripts/embed_properties.py"


rule decompose_images:
    input:
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        directory(f"{INTERPRET}/model={{model}}/dataset={{dataset}}/contributions"),
    log:
        "logs/decompose_images/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/decompose_images/{model}/{dataset}.tsv"
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
        max_images=INTERPRET_CFG["max_images"],
        head_layers=None if INTERPRET_CFG["store_all_heads"] else INTERPRET_CFG["layers"],
        dtype=CFG["embedding"]["dtype"],
        constant_split=INTERPRET_CFG["constant_split"],
    script:
        "../../scripts/decompose_images.py"


rule mean_ablation:
    input:
        store=rules.decompose_images.output[0],
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        labels=f"{RESULTS}/text/model={{model}}/dataset={{dataset}}/labels.parquet",
    output:
        table=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/mean_ablation.csv",
        figure=report(f"{INTERPRET_FIGURES}/mean_ablation.png", caption="../report/interpret_mean_ablation.rst", **REPORT),
    log:
        "logs/mean_ablation/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/mean_ablation/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    params:
        random_weights=random_weights,
    script:
        "../../scripts/mean_ablation.py"


rule textspan_heads:
    input:
        store=rules.decompose_images.output[0],
        pool=POOL_EMBEDDINGS,
    output:
        table=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/textspan.csv",
        figure=report(f"{INTERPRET_FIGURES}/textspan.png", caption="../report/interpret_textspan.rst", **REPORT),
    log:
        "logs/textspan_heads/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/textspan_heads/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    params:
        layers=INTERPRET_CFG["layers"],
        top_m=INTERPRET_CFG["textspan"]["top_m"],
        rank=INTERPRET_CFG["textspan"]["rank"],
        criterion=INTERPRET_CFG["textspan"]["criterion"],
        random_weights=random_weights,
    script:
        "../../scripts/textspan_heads.py"


rule head_properties:
    input:
        spans=rules.textspan_heads.output.table,
        pool=POOL_EMBEDDINGS,
        properties=rules.embed_properties.output[0],
    output:
        labels=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/head_labels.csv",
        metrics=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/interpretability_metrics.csv",
        figure=report(f"{INTERPRET_FIGURES}/head_properties.png", caption="../report/interpret_head_properties.rst", **REPORT),
        metrics_figure=report(
            f"{INTERPRET_FIGURES}/interpretability_metrics.png", caption="../report/interpret_metrics.rst", **REPORT
        ),
    log:
        "logs/head_properties/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/head_properties/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    params:
        weighting=INTERPRET_CFG["label_weighting"],
        n_boot=INTERPRET_CFG["n_boot"],
        seed=CFG["stats"]["seed"],
        random_weights=random_weights,
    script:
        "../../scripts/head_properties.py"


rule interpret_queries:
    input:
        weights=model_weights,
        store=rules.decompose_images.output[0],
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        labels=rules.head_properties.output.labels,
    output:
        **{
            output_name(name): report(f"{INTERPRET_FIGURES}/{name}.png", caption="../report/interpret_topic_maps.rst", **REPORT)
            for name in TOPIC_MAPS
        },
        **{
            output_name(name): report(
                f"{INTERPRET_FIGURES}/{name}.png", caption="../report/interpret_contrastive_maps.rst", **REPORT
            )
            for name in CONTRASTIVE_MAPS
        },
        properties=report(
            f"{INTERPRET_FIGURES}/property_neighbours.png", caption="../report/interpret_property_neighbours.rst", **REPORT
        ),
        head_images=report(
            f"{INTERPRET_FIGURES}/head_image_neighbours.png", caption="../report/interpret_head_image_neighbours.rst", **REPORT
        ),
        head_texts=report(
            f"{INTERPRET_FIGURES}/head_text_neighbours.png", caption="../report/interpret_head_text_neighbours.rst", **REPORT
        ),
    log:
        "logs/interpret_queries/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/interpret_queries/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    threads: model_job_threads
    resources:
        gpu=gpu_slots,
        device=model_device,
    params:
        model=model_config,
        queries=INTERPRET_CFG["queries"],
        k=INTERPRET_CFG["neighbours_k"],
        layers=INTERPRET_CFG["layers"],
        constant_split=INTERPRET_CFG["constant_split"],
        templates=INTERPRET_CFG["textspan"]["templates"],
        random_weights=random_weights,
        gallery_pdf=CFG["figures"]["gallery_pdf"],
    script:
        "../../scripts/interpret_queries.py"


rule decomposition_segmentation:
    input:
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        labels=f"{RESULTS}/text/model={{model}}/dataset={{dataset}}/labels.parquet",
    output:
        maps=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/segmentation/maps.npz",
        figure=report(f"{INTERPRET_FIGURES}/segmentation.png", caption="../report/interpret_segmentation.rst", **REPORT),
    log:
        "logs/decomposition_segmentation/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/decomposition_segmentation/{model}/{dataset}.tsv"
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
        max_images=INTERPRET_CFG["max_images"],
        layers=INTERPRET_CFG["layers"],
        constant_split=INTERPRET_CFG["constant_split"],
        segmentation=INTERPRET_CFG["segmentation"],
        random_weights=random_weights,
        gallery_pdf=CFG["figures"]["gallery_pdf"],
    script:
        "../../scripts/decomposition_segmentation.py"


rule decomposition_segmentation_evaluation:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        maps=rules.decomposition_segmentation.output.maps,
    output:
        per_map=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/segmentation/per_map.parquet",
        summary=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/segmentation/summary.csv",
        segmentation=f"{INTERPRET}/model={{model}}/dataset={{dataset}}/segmentation/segmentation.csv",
        figure=report(
            f"{INTERPRET_FIGURES}/segmentation_evaluation.png",
            caption="../report/interpret_segmentation_evaluation.rst",
            **REPORT,
        ),
    log:
        "logs/decomposition_segmentation_evaluation/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/decomposition_segmentation_evaluation/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    params:
        resize_mode=INTERPRET_CFG["segmentation"]["resize_mode"],
        n_boot=INTERPRET_CFG["n_boot"],
        random_weights=random_weights,
    script:
        "../../scripts/decomposition_segmentation_evaluation.py"
