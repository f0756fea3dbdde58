// Package actors holds SMILE's actors on protoactor-go and the node's
// Service front door:
//
//   - the vPLM actor (vplm.go): a virtual actor per model, addressed by model
//     id; it reads its catalog entry per request, tokenizes, and asks its
//     node's device actor;
//   - the device actor (device.go): one per device and backbone; it owns the
//     backbone weights, batches requests of many vPLMs into shared forward
//     passes, keeps params in host and device tiers, and enforces each
//     tenant's virtual processor (sched: start-time fair queuing). Work items
//     (work.go) put other device work, such as the trainer's steps and
//     representation computing, into the same fair queue under a tenant;
//   - training jobs (trainer.go, trainrun.go, traindata.go): a job trains a
//     vPLM's adapter and head with model/train on representations cached in
//     Badger (repcache.go), checkpoints every epoch, resumes after a crash,
//     and commits the result as the vPLM's next version (blob, then catalog,
//     then the actor's reload); eval.go scores a served vPLM on a dataset;
//   - PLOT tables (plot.go): lower-layer skipping. A table of the backbone's
//     states after its first layers for token n-grams is built as a job of
//     the same job system (BuildTable), stored in Badger and shared by
//     content; a plot-mode vPLM's rows take their states at the cut from
//     the table (opened once per node, cached in memory) instead of running
//     those layers, in serving (the device actor's mixed batches) and in
//     training alike.
package actors
