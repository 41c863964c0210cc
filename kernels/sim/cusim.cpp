// The CUDA simulator's scheduler and runtime API (see cusim.h for what it models and what not).
// A block runs as blockDim fibers on the calling OS thread; the scheduler resumes every runnable
// fiber in thread order until each has finished or waits at a barrier, then releases the barriers
// whose participants have all arrived. Nothing runnable and nothing releasable is a divergence
// error, reported as the launch's error instead of a hang.
#include "cusim.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cusim {

thread_local uint3 thread_idx{0, 0, 0};
thread_local uint3 block_idx{0, 0, 0};
thread_local dim3 block_dim;
thread_local dim3 grid_dim;

static const float* fp16_table() {
  static float* table = [] {
    auto* t = new float[65536];
    for (uint32_t h = 0; h < 65536; ++h) t[h] = pyrt::fp16_to_fp32(uint16_t(h));
    return t;
  }();
  return table;
}
const float* const fp16_values = fp16_table();

namespace {

// Limits of the device the simulator pretends to be (an H100's).
constexpr size_t kDefaultSmem = 48 * 1024;
constexpr size_t kOptinSmem = 227 * 1024;
constexpr int kSmCount = 132;
constexpr size_t kFiberStack = 256 * 1024;

enum class State { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };

// A fiber's saved execution context. On x86-64 a dozen instructions save the callee-saved registers
// and swap stacks; glibc's swapcontext would also make a signal-mask syscall at every switch, and a
// block of 128 threads switches twice per thread per barrier.
#if defined(__x86_64__) && defined(__linux__)
#define CUSIM_ASM_SWITCH 1
extern "C" void cusim_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl cusim_switch
.hidden cusim_switch
.type cusim_switch,@function
cusim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cusim_switch,.-cusim_switch
.section .note.GNU-stack,"",@progbits
.text
)");
struct Context {
  void* sp = nullptr;
};
// A new stack that "returns" into entry, with this thread's float control words.
void context_init(Context& c, void* stack, size_t bytes, void (*entry)()) {
  auto top = (reinterpret_cast<std::uintptr_t>(stack) + bytes) & ~std::uintptr_t(15);
  auto* slot = reinterpret_cast<uint64_t*>(top);
  slot[-1] = 0;                                        // entry's (never used) return address
  slot[-2] = reinterpret_cast<std::uintptr_t>(entry);  // where cusim_switch's ret goes
  for (int i = 3; i <= 8; ++i) slot[-i] = 0;           // rbp, rbx, r12..r15
  uint32_t mxcsr = 0;
  uint16_t fpcw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  slot[-9] = uint64_t(mxcsr) | uint64_t(fpcw) << 32;
  c.sp = &slot[-9];
}
void context_switch(Context& from, Context& to) {
  cusim_switch(&from.sp, to.sp);
}
#else
struct Context {
  ucontext_t uc;
};
void context_init(Context& c, void* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
void context_switch(Context& from, Context& to) {
  swapcontext(&from.uc, &to.uc);
}
#endif

struct Fiber {
  Context context;
  uint3 tid;
  int warp = 0, lane = 0;
  State state = State::kReady;
  Collective waiting_on = Collective::kSyncWarp;
  unsigned collectives = 0;  // warp collectives passed: picks the exchange buffer
};

// Stacks reused across launches (mmap'd with a guard page below, so an overflow faults).
struct Stack {
  void* base = nullptr;
  size_t bytes = 0;
  Stack() {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    bytes = kFiberStack + page;
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
      std::fprintf(stderr, "cusim: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(base, page, PROT_NONE);
  }
  ~Stack() { munmap(base, bytes); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  void* top_region() const { return static_cast<char*>(base) + (bytes - kFiberStack); }
};

struct Block {
  std::vector<Fiber> fibers;
  Context scheduler;
  Fiber* current = nullptr;
  const std::function<void()>* body = nullptr;
  // Per warp, two buffers of 32 lane values: a lane may publish collective n + 1 while a slower
  // lane still reads collective n, never n + 2 (that would need the slow lane's arrival).
  std::vector<std::array<uint64_t, 64>> exchange;
  std::vector<unsigned char> dynamic_smem;
};

thread_local Block* tl_block = nullptr;
thread_local std::vector<std::unique_ptr<Stack>> tl_stacks;

struct DeviceState {
  std::mutex mu;
  cudaError_t last = cudaSuccess;    // returned (and cleared) by cudaGetLastError
  cudaError_t sticky = cudaSuccess;  // a failed kernel: every later call reports it
  std::string message;
  std::map<std::uintptr_t, int> max_dynamic_smem;
};
DeviceState& device() {
  static DeviceState d;
  return d;
}

void set_error(cudaError_t err, const std::string& message, bool sticky) {
  DeviceState& d = device();
  std::lock_guard<std::mutex> lock(d.mu);
  d.last = err;
  if (sticky) d.sticky = err;
  d.message = message;
  std::fprintf(stderr, "cusim: %s\n", message.c_str());
}

void fiber_entry() {
  Block* b = tl_block;
  (*b->body)();
  b->current->state = State::kDone;
  context_switch(b->current->context, b->scheduler);
}

void park(State state) {
  Block* b = tl_block;
  Fiber* f = b->current;
  f->state = state;
  context_switch(f->context, b->scheduler);
  // Resumed by the scheduler, which has set thread_idx for this fiber.
}

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::kSyncWarp: return "__syncwarp";
    case Collective::kShuffle: return "a shuffle";
    case Collective::kVote: return "a vote";
    case Collective::kWmma: return "a WMMA load/store";
  }
  return "?";
}

// Releases one barrier whose participants have all arrived; "" if it did, else why not.
std::string release(Block& b, int n_warps) {
  for (int w = 0; w < n_warps; ++w) {
    int live = 0, waiting = 0;
    Collective kind = Collective::kSyncWarp;
    bool mixed = false;
    for (int l = 0; l < 32; ++l) {
      const size_t i = size_t(w) * 32 + l;
      if (i >= b.fibers.size()) break;
      const Fiber& f = b.fibers[i];
      if (f.state == State::kDone) continue;
      ++live;
      if (f.state == State::kAtWarpBarrier) {
        if (waiting > 0 && f.waiting_on != kind) mixed = true;
        kind = f.waiting_on;
        ++waiting;
      }
    }
    if (waiting > 0 && waiting == live) {
      if (mixed) return "lanes of warp " + std::to_string(w) + " wait at different warp collectives";
      for (int l = 0; l < 32 && size_t(w) * 32 + l < b.fibers.size(); ++l) {
        Fiber& f = b.fibers[size_t(w) * 32 + l];
        if (f.state == State::kAtWarpBarrier) f.state = State::kReady;
      }
      return "";
    }
  }
  int at_block = 0, live = 0;
  for (const Fiber& f : b.fibers) {
    if (f.state == State::kDone) continue;
    ++live;
    at_block += f.state == State::kAtBlockBarrier;
  }
  if (live > 0 && at_block == live) {
    for (Fiber& f : b.fibers)
      if (f.state == State::kAtBlockBarrier) f.state = State::kReady;
    return "";
  }
  for (const Fiber& f : b.fibers) {
    if (f.state != State::kAtWarpBarrier) continue;
    return "thread " + std::to_string(f.tid.x) + " waits at " + collective_name(f.waiting_on) +
           " while other threads of its warp wait at __syncthreads or another collective";
  }
  return "threads wait at barriers that cannot complete";
}

// Runs one block to completion; returns "" or the reason it could not finish.
std::string run_block(Block& b) {
  const int n = int(b.fibers.size()), n_warps = (n + 31) / 32;
  while (tl_stacks.size() < size_t(n)) tl_stacks.push_back(std::make_unique<Stack>());
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.state = State::kReady;
    f.collectives = 0;
    context_init(f.context, tl_stacks[i]->top_region(), kFiberStack, fiber_entry);
  }
  for (;;) {
    for (Fiber& f : b.fibers) {
      if (f.state != State::kReady) continue;
      b.current = &f;
      thread_idx = f.tid;
      context_switch(b.scheduler, f.context);
    }
    bool all_done = true;
    for (const Fiber& f : b.fibers) all_done &= f.state == State::kDone;
    if (all_done) return "";
    const std::string why = release(b, n_warps);
    if (!why.empty()) return why;
  }
}

std::string dim_str(const dim3& d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

}  // namespace

void sync_block() {
  park(State::kAtBlockBarrier);
}

void sync_warp(Collective what, unsigned mask) {
  Block* b = tl_block;
  Fiber* f = b->current;
  // Only whole-warp collectives are simulated: every live lane of the warp must be in the mask.
  for (int l = 0; l < 32 && mask != 0xffffffffu; ++l) {
    const size_t i = size_t(f->warp) * 32 + l;
    if (i >= b->fibers.size()) break;
    if (b->fibers[i].state != State::kDone && !(mask >> l & 1u)) {
      std::fprintf(stderr,
                   "cusim: %s with mask 0x%08x leaves out live lane %d (partial-warp masks are not simulated)\n",
                   collective_name(what), mask, l);
      std::abort();
    }
  }
  f->waiting_on = what;
  ++f->collectives;
  park(State::kAtWarpBarrier);
}

int lane_id() {
  return tl_block->current->lane;
}

const uint64_t* exchange(uint64_t value, Collective what, unsigned mask) {
  Block* b = tl_block;
  Fiber* f = b->current;
  uint64_t* buffer = b->exchange[f->warp].data() + (f->collectives & 1u) * 32;
  buffer[f->lane] = value;
  sync_warp(what, mask);
  return buffer;
}

void* dynamic_shared() {
  return tl_block->dynamic_smem.data();
}

cudaError_t set_function_attribute(std::uintptr_t fn, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || size_t(value) > kOptinSmem) {
    return cudaErrorInvalidValue;
  }
  DeviceState& d = device();
  std::lock_guard<std::mutex> lock(d.mu);
  d.max_dynamic_smem[fn] = value;
  return cudaSuccess;
}

int occupancy(int block_threads, size_t dynamic_smem) {
  if (block_threads <= 0) return 0;
  int n = std::min(2048 / block_threads, 32);
  if (dynamic_smem > 0) n = std::min<int>(n, int(kOptinSmem / dynamic_smem));
  return n;
}

void launch(const LaunchConfig& c, const std::function<void()>& body) {
  {
    DeviceState& d = device();
    std::lock_guard<std::mutex> lock(d.mu);
    if (d.sticky != cudaSuccess) return;  // a failed kernel poisons the context, as on a GPU
  }
  const unsigned long long threads = 1ull * c.block.x * c.block.y * c.block.z;
  if (threads == 0 || threads > 1024 || c.block.z > 64 || c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 ||
      c.grid.x > 0x7fffffffu || c.grid.y > 65535 || c.grid.z > 65535) {
    set_error(cudaErrorInvalidConfiguration,
              "invalid launch configuration: grid " + dim_str(c.grid) + ", block " + dim_str(c.block), false);
    return;
  }
  size_t smem_limit = kDefaultSmem;
  {
    DeviceState& d = device();
    std::lock_guard<std::mutex> lock(d.mu);
    auto it = d.max_dynamic_smem.find(c.function);
    if (it != d.max_dynamic_smem.end()) smem_limit = std::max<size_t>(smem_limit, size_t(it->second));
  }
  if (c.dynamic_smem > smem_limit) {
    set_error(cudaErrorInvalidValue,
              "launch asks for " + std::to_string(c.dynamic_smem) + " bytes of dynamic shared memory, over the " +
                  std::to_string(smem_limit) + " allowed (set cudaFuncAttributeMaxDynamicSharedMemorySize)",
              false);
    return;
  }
  Block b;
  b.body = &body;
  b.fibers.resize(threads);
  b.exchange.resize((threads + 31) / 32);
  b.dynamic_smem.resize(std::max<size_t>(c.dynamic_smem, 16));
  for (unsigned i = 0; i < threads; ++i) {
    Fiber& f = b.fibers[i];
    f.tid = {i % c.block.x, (i / c.block.x) % c.block.y, i / (c.block.x * c.block.y)};
    f.warp = int(i / 32);
    f.lane = int(i % 32);
  }
  Block* outer = tl_block;
  tl_block = &b;
  block_dim = c.block;
  grid_dim = c.grid;
  std::string failure;
  for (unsigned z = 0; z < c.grid.z && failure.empty(); ++z)
    for (unsigned y = 0; y < c.grid.y && failure.empty(); ++y)
      for (unsigned x = 0; x < c.grid.x && failure.empty(); ++x) {
        block_idx = {x, y, z};
        std::memset(b.dynamic_smem.data(), 0xFF, b.dynamic_smem.size());  // NaN: shared memory starts undefined
        failure = run_block(b);
        if (!failure.empty()) failure = "block " + dim_str(dim3(x, y, z)) + ": " + failure;
      }
  tl_block = outer;
  if (!failure.empty()) set_error(cudaErrorLaunchFailure, "kernel failed: " + failure, true);
}

const char* last_error_message() {
  static thread_local std::string copy;
  DeviceState& d = device();
  std::lock_guard<std::mutex> lock(d.mu);
  copy = d.message;
  return copy.c_str();
}

}  // namespace cusim

// ---- runtime API ----
namespace {
cudaError_t sticky_or(cudaError_t err) {
  cusim::DeviceState& d = cusim::device();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.sticky != cudaSuccess ? d.sticky : err;
}
struct EventImpl {
  std::chrono::steady_clock::time_point at;
};
}  // namespace
struct CUevent_st : EventImpl {};

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  *ptr = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t) {
  return cudaMalloc(ptr, bytes);
}
cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) {
  return cudaFree(ptr);
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return sticky_or(cudaSuccess);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes) std::memset(dst, value, bytes);
  return sticky_or(cudaSuccess);
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  return cudaMemset(dst, value, bytes);
}
cudaError_t cudaGetLastError() {
  cusim::DeviceState& d = cusim::device();
  std::lock_guard<std::mutex> lock(d.mu);
  const cudaError_t err = d.sticky != cudaSuccess ? d.sticky : d.last;
  d.last = cudaSuccess;
  return err;
}
cudaError_t cudaPeekAtLastError() {
  cusim::DeviceState& d = cusim::device();
  std::lock_guard<std::mutex> lock(d.mu);
  return d.sticky != cudaSuccess ? d.sticky : d.last;
}
const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure (simulator: see cusim's message)";
    default: return cudaGetErrorName(err);
  }
}
cudaError_t cudaDeviceSynchronize() {
  return sticky_or(cudaSuccess);
}
cudaError_t cudaDeviceReset() {
  cusim::DeviceState& d = cusim::device();
  std::lock_guard<std::mutex> lock(d.mu);
  d.last = d.sticky = cudaSuccess;
  d.message.clear();
  d.max_dynamic_smem.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return sticky_or(cudaSuccess);
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) {
  return dev == 0 ? cudaSuccess : cudaErrorInvalidValue;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int dev) {
  if (dev != 0) return cudaErrorInvalidValue;
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "pyruntime CUDA simulator (CPU)");
  prop->totalGlobalMem = size_t(1) << 34;
  prop->sharedMemPerBlock = cusim::kDefaultSmem;
  prop->sharedMemPerBlockOptin = cusim::kOptinSmem;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->multiProcessorCount = cusim::kSmCount;
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev) {
  if (dev != 0) return cudaErrorInvalidValue;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(cusim::kDefaultSmem); return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = cusim::kSmCount; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(cusim::kOptinSmem); return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  event->at = std::chrono::steady_clock::now();  // launches are synchronous here
  return sticky_or(cudaSuccess);
}
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  return sticky_or(cudaSuccess);
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}
