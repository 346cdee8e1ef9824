rule embed_images:
    input:
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        f"{RESULTS}/embeddings/model={{model}}/dataset={{dataset}}/perturbation={{family}}/shard={{shard}}.parquet",
    log:
        "logs/embed_images/{model}/{dataset}/{family}/{shard}.log",
    benchmark:
        "logs/benchmarks/embed_images/{model}/{dataset}/{family}/{shard}.tsv"
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
        perturbation=perturbation_config,
        dtype=CFG["embedding"]["dtype"],
        shard_size=CFG["embedding"]["shard_size"],
    script:
        "../../scripts/embed_images.py"


rule embed_labels:
    input:
        weights=model_weights,
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
    output:
        f"{RESULTS}/text/model={{model}}/dataset={{dataset}}/labels.parquet",
    log:
        "logs/embed_labels/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/embed_labels/{model}/{dataset}.tsv"
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
        templates=CFG["embedding"]["templates"],
    script:
        "../../scripts/embed_labels.py"


rule summarise_embeddings:
    input:
        manifest=f"{DATA}/{{dataset}}/manifest.parquet",
        rejects=f"{DATA}/{{dataset}}/rejects.csv",
        labels=f"{RESULTS}/text/model={{model}}/dataset={{dataset}}/labels.parquet",
        clean=lambda wc: embedding_files(wc.model, [CLEAN]),
    output:
        json=f"{RESULTS}/summary/model={{model}}/dataset={{dataset}}/summary.json",
        markdown=report(
            f"{RESULTS}/summary/model={{model}}/dataset={{dataset}}/summary.md",
            caption="../report/summary.rst",
            category="Embeddings",
        ),
    log:
        "logs/summarise_embeddings/{model}/{dataset}.log",
    benchmark:
        "logs/benchmarks/summarise_embeddings/{model}/{dataset}.tsv"
    conda:
        "../envs/cliplens.yaml"
    params:
        embeddings=lambda wc: embedding_params(wc, [CLEAN]),
    script:
        "../../scripts/summarise_embeddings.py"
