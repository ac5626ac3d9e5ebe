//! Data-parallel training over the real TCP ring: K = 2 and K = 4 replicas, each on its
//! own shards, take the same steps as one replica holding every shard, and the
//! quick-start MLP trained data-parallel is as accurate as trained alone.

use std::path::PathBuf;

use burn::tensor::Device;
use tessera_experiments::data_parallel::{
    CheckpointFile, CheckpointStore, DataParallelOutcome, Replica, train_mlp_replica,
};
use tessera_experiments::{Dataset, MlpConfig, OptimizerKind, Split, train_mlp};
use tessera_worker::collective::on_loopback;

const SHARDS: usize = 4;

fn digits() -> Split {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../experiments/data/digits/digits.parquet");
    Dataset::from_parquet(&path).unwrap().split(0.2, 0)
}

/// Trains `cfg` on K replicas (threads joined by a loopback ring); every replica's
/// outcome and last validation accuracy, by rank.
fn train(k: usize, cfg: &MlpConfig, split: &Split) -> Vec<(DataParallelOutcome, f64)> {
    on_loopback(k, 1, |rank, mut ring| {
        let replica = Replica::of(&split.train, &split.valid, SHARDS, rank, k);
        let mut accuracy = 0.0;
        let out = train_mlp_replica(
            cfg,
            &replica,
            5,
            &Device::flex(),
            &mut ring,
            None,
            &mut |m| {
                accuracy = m.val_accuracy;
                true
            },
        )
        .unwrap();
        (out, accuracy)
    })
}

fn assert_close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{what}: worst {worst}");
    assert!(
        worst <= tolerance,
        "{what}: parameters differ by up to {worst}"
    );
}

fn same_steps_for_any_k(cfg: &MlpConfig) {
    let split = digits();
    let one: Vec<_> = train(1, cfg, &split).into_iter().map(|r| r.0).collect();
    let moved = one[0].parameters.iter().map(|p| p.abs()).sum::<f32>();
    assert!(one[0].steps > 10 && moved > 0.0);
    for k in [2, 4] {
        let replicas: Vec<_> = train(k, cfg, &split).into_iter().map(|r| r.0).collect();
        for r in &replicas {
            // Every replica ends with bit-identical parameters ...
            assert_eq!(r.parameters, replicas[0].parameters, "k = {k}");
            assert_eq!(r.steps, one[0].steps);
        }
        // ... equal to one replica's up to the order of floating-point sums.
        assert_close(
            &replicas[0].parameters,
            &one[0].parameters,
            1e-5,
            &format!("k = {k}"),
        );
    }
}

#[test]
fn two_and_four_replicas_take_the_same_adam_steps_as_one() {
    same_steps_for_any_k(&MlpConfig {
        lr: 0.01,
        width: 32,
        depth: 2,
        batch_size: 64,
        epochs: 1,
        ..MlpConfig::default()
    });
}

#[test]
fn dropout_masks_and_sgd_do_not_depend_on_the_replica_count() {
    same_steps_for_any_k(&MlpConfig {
        lr: 0.05,
        width: 24,
        depth: 1,
        dropout: 0.25,
        batch_size: 32,
        epochs: 1,
        optimizer: OptimizerKind::Sgd,
        weight_decay: 1e-4,
        sync_every: 1,
    });
}

/// Exchanging every 3 batches: K = 2 and 4 take the same steps as K = 1, and those are
/// the steps of one batch three times as large (the same rows, one exchange), with a
/// third of the exchanges.
#[test]
fn exchanging_every_three_batches_is_one_three_times_larger_batch_for_any_k() {
    let cfg = MlpConfig {
        lr: 0.01,
        width: 32,
        depth: 1,
        batch_size: 32,
        epochs: 2,
        sync_every: 3,
        ..MlpConfig::default()
    };
    same_steps_for_any_k(&cfg);
    let split = digits();
    let three = &train(2, &cfg, &split)[0].0;
    let large = &train(
        2,
        &MlpConfig {
            batch_size: 96,
            sync_every: 1,
            ..cfg.clone()
        },
        &split,
    )[0]
    .0;
    assert_eq!(three.steps, large.steps);
    assert_eq!(three.steps, three.batches.div_ceil(3));
    assert_close(&three.parameters, &large.parameters, 1e-5, "sync_every 3");
}

#[test]
fn the_quick_start_mlp_trained_data_parallel_is_as_accurate_as_alone() {
    let split = digits();
    let cfg = MlpConfig {
        lr: 0.01,
        width: 64,
        depth: 2,
        batch_size: 64,
        epochs: 8,
        ..MlpConfig::default()
    };
    let mut alone = 0.0;
    train_mlp(&cfg, &split, 5, &Device::flex(), &mut |m| {
        alone = m.val_accuracy;
        true
    })
    .unwrap();
    let parallel: Vec<f64> = train(2, &cfg, &split).into_iter().map(|r| r.1).collect();
    eprintln!("alone {alone} parallel {parallel:?}");
    assert_eq!(
        parallel[0], parallel[1],
        "replicas report the same accuracy"
    );
    assert!(alone > 0.93, "alone: {alone}");
    assert!(
        (parallel[0] - alone).abs() < 0.02,
        "data-parallel {} against alone {alone}",
        parallel[0]
    );
}

/// A run stopped after epoch 2 and started again from the checkpoint that only one of its
/// replicas kept ends with the same parameters, bit for bit, as a run never interrupted;
/// the finished epochs' metrics are reported again.
#[test]
fn a_run_resumed_from_one_replicas_checkpoint_ends_where_an_uninterrupted_one_does() {
    let split = digits();
    let cfg = MlpConfig {
        lr: 0.01,
        width: 32,
        depth: 2,
        batch_size: 64,
        epochs: 4,
        ..MlpConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = |rank: usize| dir.path().join(format!("replica-{rank}.ckpt"));
    let run = |stop_after: u64, checkpoints: bool| {
        on_loopback(2, 3, |rank, mut ring| {
            let replica = Replica::of(&split.train, &split.valid, SHARDS, rank, 2);
            let mut store = CheckpointFile(file(rank));
            let mut seen = Vec::new();
            let out = train_mlp_replica(
                &cfg,
                &replica,
                5,
                &Device::flex(),
                &mut ring,
                checkpoints.then_some(&mut store as &mut dyn CheckpointStore),
                &mut |m| {
                    seen.push((m.epoch, m.val_accuracy));
                    m.epoch < stop_after
                },
            )
            .unwrap();
            (out, seen)
        })
    };
    let whole = run(u64::MAX, false);
    let stopped = run(2, true);
    assert_eq!(stopped[0].0.epochs, 2);
    // Replica 0's worker is gone: only replica 1 kept the checkpoint.
    std::fs::remove_file(file(0)).unwrap();
    let resumed = run(u64::MAX, true);
    for r in &resumed {
        assert_eq!(r.0.resumed_from, 2);
        assert_eq!(r.0.parameters, whole[0].0.parameters, "bit for bit");
        assert_eq!(r.0.steps, whole[0].0.steps);
        // Epochs 1 and 2 reported again (metrics kept in f32), then 3 and 4.
        let epochs: Vec<u64> = r.1.iter().map(|(e, _)| *e).collect();
        assert_eq!(epochs, [1, 2, 3, 4]);
        for ((_, a), (_, b)) in r.1.iter().zip(&whole[0].1) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
    }
}

/// A `nas` sweep's super-network trained data-parallel: K = 2 and 4 replicas draw the
/// same sandwich sub-networks and end with the weights of K = 1.
#[test]
fn a_super_network_trains_data_parallel_to_the_same_weights_for_any_k() {
    use tessera_core::nas_sweep::Supernet;
    use tessera_experiments::supernet::{SupernetTraining, train_supernet_replica};
    let net: Supernet =
        serde_json::from_str(r#"{"family": "mlp", "depth": [1, 2], "width": [8, 16, 32]}"#)
            .unwrap();
    let cfg = SupernetTraining {
        epochs: 2,
        learning_rate: 0.003,
        batch_size: 64,
        random_subnets: 2,
    };
    let split = digits();
    let run = |k: usize| {
        on_loopback(k, 3, |rank, mut ring| {
            let replica = Replica::of(&split.train, &split.valid, SHARDS, rank, k);
            let mut accuracy = 0.0;
            let (model, _, steps, _) = train_supernet_replica(
                &net,
                &cfg,
                &replica,
                9,
                &Device::flex(),
                &mut ring,
                None,
                &mut |m| {
                    accuracy = m.val_accuracy;
                    true
                },
            )
            .unwrap();
            let weights: Vec<f32> = model.flat().into_iter().map(|v| v as f32).collect();
            (weights, steps, accuracy)
        })
    };
    let one = run(1).remove(0);
    assert!(
        one.1 > 10 && one.2 > 0.5,
        "steps {}, accuracy {}",
        one.1,
        one.2
    );
    for k in [2, 4] {
        let replicas = run(k);
        for r in &replicas {
            assert_eq!(r.0, replicas[0].0, "k = {k}");
            assert_eq!(r.1, one.1);
        }
        assert_close(
            &replicas[0].0,
            &one.0,
            1e-5,
            &format!("super-network, k = {k}"),
        );
    }
}

/// A super-network run stopped after epoch 1 and resumed from the checkpoint only one
/// replica kept ends with the weights of an uninterrupted run, bit for bit.
#[test]
fn a_super_network_resumed_from_a_checkpoint_ends_where_an_uninterrupted_one_does() {
    use tessera_core::nas_sweep::Supernet;
    use tessera_experiments::supernet::{SupernetTraining, train_supernet_replica};
    let net: Supernet =
        serde_json::from_str(r#"{"family": "mlp", "depth": [1, 2], "width": [8, 16]}"#).unwrap();
    let cfg = SupernetTraining {
        epochs: 3,
        learning_rate: 0.003,
        batch_size: 64,
        random_subnets: 1,
    };
    let split = digits();
    let dir = tempfile::tempdir().unwrap();
    let file = |rank: usize| dir.path().join(format!("supernet-{rank}.ckpt"));
    let run = |stop_after: u64, checkpoints: bool| {
        on_loopback(2, 4, |rank, mut ring| {
            let replica = Replica::of(&split.train, &split.valid, SHARDS, rank, 2);
            let mut store = CheckpointFile(file(rank));
            let mut epochs = Vec::new();
            let (model, _, steps, from) = train_supernet_replica(
                &net,
                &cfg,
                &replica,
                9,
                &Device::flex(),
                &mut ring,
                checkpoints.then_some(&mut store as &mut dyn CheckpointStore),
                &mut |m| {
                    epochs.push(m.epoch);
                    m.epoch < stop_after
                },
            )
            .unwrap();
            (model.flat(), steps, from, epochs)
        })
    };
    let whole = run(u64::MAX, false);
    run(1, true);
    std::fs::remove_file(file(1)).unwrap();
    for r in run(u64::MAX, true) {
        assert_eq!(r.2, 1, "resumed after epoch 1");
        assert_eq!(r.3, [1, 2, 3]);
        assert_eq!(r.1, whole[0].1);
        assert_eq!(r.0, whole[0].0, "bit for bit");
    }
}
