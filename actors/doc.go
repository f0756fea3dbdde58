// Package actors will hold SMILE's actors on protoactor-go: the vPLM actor
// (a virtual actor per model, addressed by model id), the device actor (one
// per device and backbone: owns the backbone weights, batches requests of
// many vPLMs into shared forward passes, enforces each tenant's virtual
// processor share) and the trainer actor, plus the messages between them.
// Nothing lives here yet: the processor issue builds it on model and gpu.
package actors
