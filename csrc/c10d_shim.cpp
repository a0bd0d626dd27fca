// prunex's bridge to c10d, the engine PyTorch's DistributedDataParallel runs
// on: a TCPStore rendezvous, ProcessGroupGloo (CPU) or ProcessGroupNCCL
// (CUDA, with the `nccl` feature), collectives, DDP's bucketed c10d::Reducer
// and a synchronised BatchNorm. Compiled by build.rs against the torch
// wheel's headers; linked to libtorch_cpu (which holds gloo's code), never
// to a libgloo of its own.
//
// Every entry point returns NULL on success or a malloc'd message (freed by
// pxd_free_error): no C++ exception crosses into Rust. Tensors are passed as
// tch's `C_tensor*`, which is a heap `torch::Tensor*`.

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct pxd_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  // The wrapper the Reducer and broadcast_coalesced take.
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  int rank = 0;
  int world = 1;
};

struct pxd_reducer {
  std::unique_ptr<c10d::Reducer> r;
};

namespace {

template <class F>
char* guard(F&& f) noexcept {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return strdup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    // gloo::IoException (a peer died or timed out) is a std::exception.
    return strdup(e.what());
  } catch (...) {
    return strdup("unknown C++ exception");
  }
}

std::vector<at::Tensor> tensors(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

void allreduce_sum(pxd_group* g, at::Tensor& t) {
  std::vector<at::Tensor> v{t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  g->backend->allreduce(v, o)->wait();
}

// BatchNorm over the whole global batch: the forward pass all-reduces each
// channel's count, sum and sum of squares; the backward pass all-reduces the
// sums of dy and dy·(x − mean) the input's gradient needs (as PyTorch's
// SyncBatchNorm does). γ's and β's gradients stay local: the Reducer
// averages them like any other.
struct SyncBatchNorm : public torch::autograd::Function<SyncBatchNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& bias,
                            at::Tensor running_mean, at::Tensor running_var, double momentum,
                            double eps, int64_t group) {
    auto* g = reinterpret_cast<pxd_group*>(group);
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
    auto xd = x.to(at::kDouble);
    auto count = at::full({1}, static_cast<double>(x.numel() / std::max<int64_t>(x.size(1), 1)),
                          xd.options());
    auto stats = at::cat({xd.sum(dims), xd.square().sum(dims), count});
    allreduce_sum(g, stats);
    int64_t c = x.size(1);
    auto n = stats[2 * c].item<double>();
    auto mean = stats.slice(0, 0, c) / n;
    auto var = (stats.slice(0, c, 2 * c) / n - mean.square()).clamp_min(0);
    auto invstd = (var + eps).rsqrt();
    {
      at::NoGradGuard ng;
      if (running_mean.defined()) {
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
        auto unbiased = n > 1 ? var * (n / (n - 1)) : var;
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.scalar_type()), momentum);
      }
    }
    std::vector<int64_t> shape(x.dim(), 1);
    shape[1] = c;
    auto m = mean.to(x.scalar_type()).view(shape);
    auto s = invstd.to(x.scalar_type()).view(shape);
    ctx->save_for_backward({x, weight, m, s});
    ctx->saved_data["group"] = group;
    ctx->saved_data["n"] = n;
    return (x - m) * s * weight.view(shape) + bias.view(shape);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto x = saved[0], weight = saved[1], m = saved[2], s = saved[3];
    auto* g = reinterpret_cast<pxd_group*>(ctx->saved_data["group"].toInt());
    double n = ctx->saved_data["n"].toDouble();
    auto dy = grads[0];
    std::vector<int64_t> dims{0};
    for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
    std::vector<int64_t> shape(x.dim(), 1);
    shape[1] = x.size(1);
    auto xmu = x - m;
    auto sum_dy = dy.sum(dims);
    auto sum_dy_xmu = (dy * xmu).sum(dims);
    auto grad_weight = sum_dy_xmu * s.view({-1});
    auto grad_bias = sum_dy;
    int64_t c = x.size(1);
    auto both = at::cat({sum_dy, sum_dy_xmu}).to(at::kDouble);
    allreduce_sum(g, both);
    auto mean_dy = (both.slice(0, 0, c) / n).to(x.scalar_type()).view(shape);
    auto mean_dy_xmu = (both.slice(0, c, 2 * c) / n).to(x.scalar_type()).view(shape);
    auto grad_x = (dy - mean_dy - xmu * s.square() * mean_dy_xmu) * s * weight.view(shape);
    return {grad_x, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

void pxd_free_error(char* e) { free(e); }

// Joins the group: rank 0 hosts the TCPStore at addr:port unless
// `agent_store` (torchrun's agent hosts it; every rank is a client).
// backend: 0 = gloo, 1 = NCCL on cuda:device.
char* pxd_group_new(const char* addr, uint16_t port, int rank, int world, int agent_store,
                    int backend, int device, int64_t timeout_ms, const char* gloo_host,
                    pxd_group** out) {
  return guard([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = rank == 0 && !agent_store;
    so.numWorkers = world;
    so.waitWorkers = !agent_store;
    so.timeout = timeout;
    auto g = std::make_unique<pxd_group>();
    g->rank = rank;
    g->world = world;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(addr, so);
    // A prefix keeps prunex's keys apart from torchrun's agent's.
    g->store = c10::make_intrusive<c10d::PrefixStore>("prunex", tcp);
    g->pg = c10::make_intrusive<c10d::ProcessGroup>(g->store, rank, world);
    if (backend == 0) {
#ifdef USE_C10D_GLOO
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      // "if:eth0" names a network interface (GLOO_SOCKET_IFNAME), anything
      // else a host name or address to bind to.
      std::string host(gloo_host);
      o->devices.push_back(host.rfind("if:", 0) == 0
                               ? c10d::ProcessGroupGloo::createDeviceForInterface(host.substr(3))
                               : c10d::ProcessGroupGloo::createDeviceForHostname(host));
      g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, world, o);
      g->pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, g->backend);
      g->pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
#else
      TORCH_CHECK(false, "this prunex was built without gloo");
#endif
    } else {
#ifdef USE_C10D_NCCL
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      g->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->store, rank, world, o);
      g->pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, g->backend);
      g->pg->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
#else
      (void)device;
      TORCH_CHECK(false,
                  "this prunex was built without NCCL (build with `--features nccl` for CUDA)");
#endif
    }
    *out = g.release();
  });
}

void pxd_group_free(pxd_group* g) {
  try {
    delete g;
  } catch (...) {
  }
}

// In place, over all ranks: op 0 = sum, 1 = mean, 2 = max, 3 = min.
char* pxd_allreduce(pxd_group* g, at::Tensor** ts, size_t n, int op) {
  return guard([&] {
    auto v = tensors(ts, n);
    c10d::AllreduceCoalescedOptions o;
    o.reduceOp = op == 1   ? c10d::ReduceOp::AVG
                 : op == 2 ? c10d::ReduceOp::MAX
                 : op == 3 ? c10d::ReduceOp::MIN
                           : c10d::ReduceOp::SUM;
    at::NoGradGuard ng;
    for (auto& t : v) {
      std::vector<at::Tensor> one{t};
      g->backend->allreduce(one, o)->wait();
    }
  });
}

// In place: every rank ends with `root`'s values.
char* pxd_broadcast(pxd_group* g, at::Tensor** ts, size_t n, int root) {
  return guard([&] {
    auto v = tensors(ts, n);
    at::NoGradGuard ng;
    c10d::broadcast_coalesced(g->pg, v, 250 * 1024 * 1024, root);
  });
}

// Bytes through the store (small: decisions, not tensors).
char* pxd_store_set(pxd_group* g, const char* key, const uint8_t* data, size_t len) {
  return guard([&] { g->store->set(key, std::vector<uint8_t>(data, data + len)); });
}

// Waits for the key (up to the group's timeout); *out is malloc'd.
char* pxd_store_get(pxd_group* g, const char* key, uint8_t** out, size_t* len) {
  return guard([&] {
    auto v = g->store->get(key);
    *out = static_cast<uint8_t*>(malloc(std::max<size_t>(v.size(), 1)));
    std::copy(v.begin(), v.end(), *out);
    *len = v.size();
  });
}

void pxd_free_bytes(uint8_t* p) { free(p); }

// Without waiting: *found is whether the key is set, and then *value its
// value as a number (0 when it is not one).
char* pxd_store_peek(pxd_group* g, const char* key, int* found, int64_t* value) {
  return guard([&] {
    *found = g->store->check({key}) ? 1 : 0;
    *value = 0;
    if (*found) {
      auto v = g->store->get(key);
      *value = std::strtoll(std::string(v.begin(), v.end()).c_str(), nullptr, 10);
    }
  });
}

// Sets the key to `desired` unless it is set already (the first writer
// wins); *value is what it holds afterwards.
char* pxd_store_first(pxd_group* g, const char* key, int64_t desired, int64_t* value) {
  return guard([&] {
    auto d = std::to_string(desired);
    auto v = g->store->compareSet(key, {}, std::vector<uint8_t>(d.begin(), d.end()));
    *value = std::strtoll(std::string(v.begin(), v.end()).c_str(), nullptr, 10);
  });
}

// DDP's reducer over the parameters, in model order, as
// DistributedDataParallel builds it without find_unused_parameters: one
// bucket at first, rebuilt after the first backward in the order gradients
// became ready, capped at bucket_cap bytes (first_bucket_cap for the first).
char* pxd_reducer_new(pxd_group* g, at::Tensor** ps, size_t n, int64_t bucket_cap,
                      int64_t first_bucket_cap, pxd_reducer** out) {
  return guard([&] {
    auto params = tensors(ps, n);
    auto assigned = c10d::compute_bucket_assignment_by_size(params, {SIZE_MAX},
                                                            std::vector<bool>(n, false));
    auto idx = std::get<0>(assigned);
    std::reverse(idx.begin(), idx.end());
    auto r = std::make_unique<pxd_reducer>();
    r->r = std::make_unique<c10d::Reducer>(params, idx, g->pg, std::vector<bool>(n, false),
                                           bucket_cap, false, false,
                                           std::unordered_map<size_t, std::string>{},
                                           first_bucket_cap, false, false,
                                           std::vector<int64_t>{}, false);
    *out = r.release();
  });
}

// Drops the tensors' gradients (PyTorch's zero_grad(set_to_none=True)):
// the next backward hands its buffers over instead of adding them to
// zeros.
char* pxd_drop_grads(at::Tensor** ts, size_t n) {
  return guard([&] {
    for (size_t i = 0; i < n; ++i) ts[i]->mutable_grad().reset();
  });
}

// Before each forward pass of a training step.
char* pxd_reducer_pre_forward(pxd_reducer* r) {
  return guard([&] {
    r->r->rebuild_buckets();
    r->r->prepare_for_forward();
  });
}

// After the forward pass, before backward.
char* pxd_reducer_pre_backward(pxd_reducer* r) {
  return guard([&] { r->r->prepare_for_backward({}); });
}

void pxd_reducer_free(pxd_reducer* r) {
  try {
    delete r;
  } catch (...) {
  }
}

// BatchNorm in training mode over all ranks' batches (see SyncBatchNorm).
char* pxd_sync_batch_norm(pxd_group* g, at::Tensor* x, at::Tensor* weight, at::Tensor* bias,
                          at::Tensor* running_mean, at::Tensor* running_var, double momentum,
                          double eps, at::Tensor** out) {
  return guard([&] {
    auto y = SyncBatchNorm::apply(*x, *weight, *bias, *running_mean, *running_var, momentum, eps,
                                  reinterpret_cast<int64_t>(g));
    *out = new at::Tensor(std::move(y));
  });
}

}  // extern "C"
