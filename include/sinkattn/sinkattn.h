/*
 * sinkattn: exact attention with learned sinks, sliding windows, GQA and packed
 * variable-length batches, forward and backward. C ABI.
 *
 * Semantics (shared by every backend):
 *   x_ij   = scale * q_i . k_j
 *   P_ij   = exp(x_ij) / (sum_{j' visible} exp(x_ij') + exp(s_h))   (sink term only if sinks != NULL)
 *   out_i  = sum_j P_ij v_j
 *   lse_i  = log of the whole denominator, sink included (fp32)
 * Mask: query i of a sequence sits at key position i + (Sk - Sq) (bottom-right alignment),
 *   or, with problem.zigzag_world set, at its zigzag position (see sinkattn_problem).
 *   Key j is visible iff 0 <= j < Sk, j >= pos - window_left (when window_left >= 0) and
 *   j <= pos + window_right (when window_right >= 0). causal != 0 means window_right = 0.
 * A row that sees no key: out = 0, lse = s_h with a sink, -inf without; its gradients are 0.
 * GQA: heads_q % heads_kv == 0; query head h reads kv head h / (heads_q / heads_kv).
 *
 * Memory: the caller owns everything (outputs, lse, workspace). The library never allocates
 * device memory and never synchronises; CUDA work is enqueued on `stream`.
 * Errors: every entry returns a sinkattn_status; on failure sinkattn_last_error() (thread-local)
 * names the argument, what it got and what is accepted. Nothing is written on failure.
 */
#ifndef SINKATTN_SINKATTN_H_
#define SINKATTN_SINKATTN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SINKATTN_API __declspec(dllexport)
#else
#define SINKATTN_API __attribute__((visibility("default")))
#endif

#define SINKATTN_VERSION_MAJOR 0
#define SINKATTN_VERSION_MINOR 1
#define SINKATTN_VERSION_PATCH 0
/* Bumped whenever a params struct changes layout; bindings check it. */
#define SINKATTN_ABI_VERSION 2

typedef enum sinkattn_status {
  SINKATTN_OK = 0,
  SINKATTN_ERROR_INVALID_ARGUMENT = 1, /* the arguments are wrong; the message says which */
  SINKATTN_ERROR_NOT_SUPPORTED = 2,    /* valid, but no backend of this build implements it */
  SINKATTN_ERROR_CUDA = 3,             /* a CUDA runtime call or launch failed */
  SINKATTN_ERROR_INTERNAL = 4          /* a bug: please report it with the message */
} sinkattn_status;

typedef enum sinkattn_dtype {
  SINKATTN_FLOAT32 = 0, /* CPU only */
  SINKATTN_FLOAT16 = 1,
  SINKATTN_BFLOAT16 = 2
} sinkattn_dtype;

typedef enum sinkattn_device_type {
  SINKATTN_DEVICE_CPU = 0,
  SINKATTN_DEVICE_CUDA = 1
} sinkattn_device_type;

/*
 * A strided view of a (batch, row, head, head_dim) tensor. Strides count elements, not bytes.
 * The head dimension is contiguous (stride 1). For packed variable-length batches the tensor is
 * (total_rows, head, head_dim) and batch_stride is ignored.
 */
typedef struct sinkattn_tensor {
  void* data;           /* first element; NULL only where the field's comment allows it */
  int64_t batch_stride; /* elements between batch entries (fixed-length layout only) */
  int64_t row_stride;   /* elements between consecutive tokens */
  int64_t head_stride;  /* elements between consecutive heads */
} sinkattn_tensor;

/*
 * The attention problem, shared by both directions. Fixed-length batches: cu_seqlens_q and
 * cu_seqlens_k are NULL, q is (batch, seqlen_q, heads_q, head_dim), k and v are
 * (batch, seqlen_k, heads_kv, head_dim). Packed variable-length batches: both cu_seqlens are set,
 * q is (total_q, heads_q, head_dim), k and v are (total_k, heads_kv, head_dim), and sequence b
 * holds rows [cu_seqlens_q[b], cu_seqlens_q[b+1]) of q and [cu_seqlens_k[b], cu_seqlens_k[b+1])
 * of k and v; seqlen_q / seqlen_k are then upper bounds on the per-sequence lengths. Rows outside
 * every sequence (before cu_seqlens[0], from cu_seqlens[batch] on) are written too: out, dq, dk and
 * dv 0, lse -inf, so callers need not clear the outputs first. On the CPU the library checks the
 * offsets; on CUDA it cannot without a device synchronisation, so the kernels clamp them to [0,
 * total_q / total_k] and each length to seqlen_q / seqlen_k (never reading or writing out of
 * bounds, the workspace included), and a check in the call's stream, after its kernels, fills
 * every output (out and lse; dq, dk, dv and dsink) with NaN where the offsets break a rule the
 * CPU checks: a sequence longer than seqlen_q / seqlen_k, decreasing offsets, offsets
 * past total_q / total_k, or the zigzag lengths below. That check also keeps the first rule broken
 * (in host memory the device writes): the next sinkattn_fwd / sinkattn_bwd on CUDA, on any thread,
 * fails with it (SINKATTN_ERROR_INVALID_ARGUMENT, naming the offset), as does
 * sinkattn_deferred_error, which asks without running anything.
 */
typedef struct sinkattn_problem {
  int32_t device_type;  /* sinkattn_device_type of every pointer below */
  int32_t device_index; /* CUDA ordinal of the pointers (ignored on CPU) */
  int32_t dtype;        /* sinkattn_dtype of q, k, v (and out, dout, dq, dk, dv) */
  int32_t head_dim;     /* D: 32, 64, 96, 128 or 256 (the Python layer zero-pads others) */
  int64_t batch;        /* B (fixed) or number of sequences N (varlen); >= 1 */
  int64_t seqlen_q;     /* Sq (fixed) or max query length (varlen); >= 0 */
  int64_t seqlen_k;     /* Sk (fixed) or max key length (varlen); >= 0 */
  int64_t heads_q;      /* Hq >= 1 */
  int64_t heads_kv;     /* Hkv >= 1, heads_q % heads_kv == 0 */

  sinkattn_tensor q; /* (B, Sq, Hq, D) or (Tq, Hq, D), dtype; never NULL unless no element */
  sinkattn_tensor k; /* (B, Sk, Hkv, D) or (Tk, Hkv, D), dtype */
  sinkattn_tensor v; /* (B, Sk, Hkv, D) or (Tk, Hkv, D), dtype */

  const float* sinks; /* (Hq,) fp32 raw sink logits (not scaled); NULL = no sink */

  const int32_t* cu_seqlens_q; /* (batch + 1,) int32 prefix sums, same device as q; NULL = fixed */
  const int32_t* cu_seqlens_k; /* (batch + 1,) int32 prefix sums; NULL exactly when cu_seqlens_q is */
  int64_t total_q;             /* varlen: rows of q (Tq); must be >= cu_seqlens_q[batch]. 0 if fixed */
  int64_t total_k;             /* varlen: rows of k and v (Tk); >= cu_seqlens_k[batch]. 0 if fixed */

  float scale;          /* softmax scale on q.k, finite and > 0; the usual value is 1/sqrt(D) */
  int32_t causal;       /* nonzero: window_right is 0 (window_right must then be -1 or 0) */
  int64_t window_left;  /* keys visible before the aligned position; -1 = unbounded */
  int64_t window_right; /* keys visible after the aligned position; -1 = unbounded */

  void* stream; /* cudaStream_t for CUDA work (NULL = legacy default stream); ignored on CPU */

  /* Fused zigzag context parallelism (both of a rank's zigzag query chunks in one call against
   * the gathered keys). With zigzag_world = W >= 1, every sequence's queries are two halves of
   * c = len_q / 2 rows: rows [0, c) are global chunk r = zigzag_rank (query i at key position
   * r*c + i), rows [c, 2c) are chunk 2W-1-r (query i at (2W-1-r)*c + i - c). The keys are the
   * sequence's whole gathered K/V in natural order, len_k = 2*W*c. The window applies around these
   * positions. Each len_q must be even and len_k = W * len_q (checked where the CPU reads
   * cu_seqlens; CUDA kernels clamp instead and never read out of bounds). All zero = off. */
  int32_t zigzag_rank;  /* this rank r, 0 <= r < zigzag_world; ignored when zigzag_world is 0 */
  int32_t zigzag_world; /* CP world size W >= 1; 0 = off (ordinary bottom-right alignment) */
} sinkattn_problem;

/* Forward: out and (optionally) lse. */
typedef struct sinkattn_fwd_params {
  sinkattn_problem problem;
  sinkattn_tensor out; /* (B, Sq, Hq, D) or (Tq, Hq, D), dtype; written */
  float* lse;          /* contiguous fp32 (B, Hq, Sq) or (Hq, Tq); written; NULL = not wanted */
  void* workspace;     /* sinkattn_fwd_workspace_size bytes, 16-byte aligned; NULL if that is 0 */
  size_t workspace_size; /* bytes available at workspace */
} sinkattn_fwd_params;

/* Backward: dq, dk, dv and (optionally) dsink from the forward's out and lse. */
typedef struct sinkattn_bwd_params {
  sinkattn_problem problem;
  sinkattn_tensor out;  /* (B, Sq, Hq, D) or (Tq, Hq, D), dtype: the forward output; read */
  sinkattn_tensor dout; /* same shape as out, dtype: gradient of the loss w.r.t. out; read */
  const float* lse;     /* contiguous fp32 (B, Hq, Sq) or (Hq, Tq) from the forward; read */
  sinkattn_tensor dq;   /* same shape as q, dtype; written (overwritten, not accumulated) */
  sinkattn_tensor dk;   /* same shape as k, dtype; written */
  sinkattn_tensor dv;   /* same shape as v, dtype; written */
  float* dsink;         /* (Hq,) fp32; written: dL/dsink_h = -sum_i exp(s_h - lse_i) delta_i.
                           NULL = not wanted; must be NULL when problem.sinks is NULL */
  int32_t deterministic; /* nonzero: bit-identical results run to run (may be slower) */
  void* workspace;       /* sinkattn_bwd_workspace_size bytes, 16-byte aligned; NULL if 0 */
  size_t workspace_size; /* bytes available at workspace */
} sinkattn_bwd_params;

/* Library version as MAJOR*10000 + MINOR*100 + PATCH, and the ABI version of the structs. */
SINKATTN_API int sinkattn_version(void);
SINKATTN_API int sinkattn_abi_version(void);

/* Thread-local message of the last failed call on this thread ("" if none). */
SINKATTN_API const char* sinkattn_last_error(void);

/* SINKATTN_OK when fwd/bwd would run these params; otherwise the status, with the reason in
 * sinkattn_last_error(). Checks everything fwd/bwd check, touches no tensor data except
 * cu_seqlens on the CPU. */
SINKATTN_API sinkattn_status sinkattn_fwd_can_implement(const sinkattn_fwd_params* params);
SINKATTN_API sinkattn_status sinkattn_bwd_can_implement(const sinkattn_bwd_params* params);

/* Which kernel family the forward / backward runs for these params and, where a faster one exists but is
 * not used, why: "cpu", "cuda sm90 (wgmma, TMA)" or "cuda sm80 (portable; sm90 not used:
 * <reason>)". NULL when the params would be refused (the reason in sinkattn_last_error()); the
 * workspace is not checked, so this may be asked before one is allocated.
 * Thread-local text, valid until the next call on this thread. */
SINKATTN_API const char* sinkattn_fwd_kernel(const sinkattn_fwd_params* params);
SINKATTN_API const char* sinkattn_bwd_kernel(const sinkattn_bwd_params* params);

/* Bytes of workspace the call needs for these params. The problem is checked as fwd/bwd check it
 * (pointers included), except that the contents of cu_seqlens are not read. Packed, it grows with
 * the rows (total_q) and the number of sequences, not with batch x the max length. */
SINKATTN_API sinkattn_status sinkattn_fwd_workspace_size(const sinkattn_fwd_params* params,
                                                         size_t* bytes);
SINKATTN_API sinkattn_status sinkattn_bwd_workspace_size(const sinkattn_bwd_params* params,
                                                         size_t* bytes);

/* Run. CPU: returns when done. CUDA: enqueues on problem.stream and returns. */
SINKATTN_API sinkattn_status sinkattn_fwd(const sinkattn_fwd_params* params);
SINKATTN_API sinkattn_status sinkattn_bwd(const sinkattn_bwd_params* params);

/* The error of a packed CUDA call whose cu_seqlens its device-side check found broken (see
 * sinkattn_problem) and no call has reported yet: SINKATTN_ERROR_INVALID_ARGUMENT with the offset
 * and the rule in sinkattn_last_error(), reported once; SINKATTN_OK when there is none. It sees the
 * calls whose check has run: synchronise their streams first to ask about every call enqueued. */
SINKATTN_API sinkattn_status sinkattn_deferred_error(void);

/* Where this build can run: nonzero if CUDA kernels were compiled in. */
SINKATTN_API int sinkattn_has_cuda(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SINKATTN_SINKATTN_H_ */
