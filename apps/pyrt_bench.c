/* pyrt-bench: prefill / decode speed of a GGUF model through the C ABI alone, no Python in the
   process, so its peak RSS is the runtime's (the counterpart of llama.cpp's llama-bench).

   pyrt-bench -m model.gguf [-t threads] [-p n_prompt] [-n n_gen] [-r reps] [--kv-cache f16] [--device cpu] [--json]

   Tests as in `pyrt bench`: pp<n_prompt> feeds n_prompt random ids at once, tg<n_gen> feeds one id
   and then n_gen ids one by one; each test runs reps + 1 times and the first (cold) run is dropped.
   Prints one line per test (JSON with --json: test, tok_s median/min/max, runs). Exit status: 0,
   2 for bad arguments, 1 for a runtime error (message on stderr). */
#define _POSIX_C_SOURCE 199309L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pyrt/pyrt.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static int usage(const char* why) {
  fprintf(stderr,
          "pyrt-bench: %s\nusage: pyrt-bench -m model.gguf [-t threads] [-p n_prompt] [-n n_gen] [-r reps] "
          "[--kv-cache TYPE] [--device cpu|cuda|cuda-sim] [--json]\n",
          why);
  return 2;
}

/* An integer option value in lo..hi, or -1 with a message. */
static long parse_count(const char* opt, const char* text, long lo, long hi) {
  char* end = NULL;
  errno = 0;
  const long v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "pyrt-bench: %s expects an integer in %ld..%ld, got '%s'\n", opt, lo, hi, text);
    return -1;
  }
  return v;
}

/* A JSON string literal (the model path may hold quotes or backslashes). */
static void print_json_string(const char* s) {
  putchar('"');
  for (; *s; ++s) {
    const unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      printf("\\%c", c);
    else if (c < 0x20)
      printf("\\u%04x", c);
    else
      putchar(c);
  }
  putchar('"');
}

static int fail(const char* what) {
  fprintf(stderr, "pyrt-bench: %s: %s\n", what, pyrt_last_error());
  return 1;
}

/* Splitmix64: reproducible random ids without libc's rand() state. */
static uint64_t next_random(uint64_t* s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int main(int argc, char** argv) {
  const char* model_path = NULL;
  const char* kv = "f16";
  const char* device = "cpu";
  long threads = 4, n_prompt = 512, n_gen = 128, reps = 5;
  int json = 0;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (strcmp(a, "--json") == 0) {
      json = 1;
      continue;
    }
    long* count = strcmp(a, "-t") == 0   ? &threads
                  : strcmp(a, "-p") == 0 ? &n_prompt
                  : strcmp(a, "-n") == 0 ? &n_gen
                  : strcmp(a, "-r") == 0 ? &reps
                                         : NULL;
    if (!count && strcmp(a, "-m") != 0 && strcmp(a, "--kv-cache") != 0 && strcmp(a, "--device") != 0) {
      fprintf(stderr, "pyrt-bench: unknown option '%s'\n", a);
      return usage("see the options below");
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "pyrt-bench: option '%s' needs a value\n", a);
      return 2;
    }
    const char* v = argv[++i];
    if (strcmp(a, "-m") == 0)
      model_path = v;
    else if (strcmp(a, "--kv-cache") == 0)
      kv = v;
    else if (strcmp(a, "--device") == 0)
      device = v;
    else if ((*count = parse_count(a, v, count == &threads || count == &reps ? 1 : 0,
                                   count == &threads ? 256 : 1 << 20)) < 0)
      return 2;
  }
  if (!model_path) return usage("-m model.gguf is required");

  pyrt_model* model = NULL;
  if (pyrt_model_load_on(model_path, (int)threads, kv, device, &model) != PYRT_OK) return fail("cannot load the model");
  const int64_t vocab = pyrt_model_vocab_size(model);
  float* logits = malloc((size_t)vocab * sizeof(float));
  int32_t* ids = malloc((size_t)(n_prompt + n_gen + 1) * sizeof(int32_t));
  double* rates = malloc((size_t)(reps + 1) * sizeof(double));
  if (!logits || !ids || !rates) {
    fprintf(stderr, "pyrt-bench: out of memory\n");
    return 1;
  }
  uint64_t seed = 0;
  int status = 0;
  for (int test = 0; test < 2 && status == 0; ++test) {
    const long n_tok = test == 0 ? n_prompt : n_gen;
    if (n_tok == 0) continue;
    int runs = 0;
    for (long rep = 0; rep <= reps && status == 0; ++rep) {
      for (long i = 0; i < n_tok + 1; ++i) ids[i] = (int32_t)(next_random(&seed) % (uint64_t)vocab);
      pyrt_session* sess = NULL;
      if (pyrt_session_new(model, n_tok + 2, &sess) != PYRT_OK) {
        status = fail("session");
        break;
      }
      double t0 = now_s();
      if (test == 0) {
        if (pyrt_session_feed(sess, ids, (size_t)n_tok, logits) != PYRT_OK) status = fail("prefill");
      } else {
        if (pyrt_session_feed(sess, ids, 1, logits) != PYRT_OK) status = fail("decode");
        t0 = now_s();
        for (long i = 1; i <= n_tok && status == 0; ++i)
          if (pyrt_session_feed(sess, ids + i, 1, logits) != PYRT_OK) status = fail("decode");
      }
      const double dt = now_s() - t0;
      pyrt_session_free(sess);
      if (rep > 0 && status == 0) rates[runs++] = (double)n_tok / dt;  // the first run warms caches
    }
    if (status != 0) break;
    qsort(rates, (size_t)runs, sizeof(double), cmp_double);
    const double median = runs % 2 ? rates[runs / 2] : 0.5 * (rates[runs / 2 - 1] + rates[runs / 2]);
    const char* kind = test == 0 ? "pp" : "tg";
    if (json) {
      printf(
          "{\"test\": \"%s%ld\", \"tok_s\": %.4f, \"tok_s_min\": %.4f, \"tok_s_max\": %.4f, \"runs\": %d, "
          "\"threads\": %ld, \"runtime\": \"pyrt-bench\", \"model\": ",
          kind, n_tok, median, rates[0], rates[runs - 1], runs, threads);
      print_json_string(model_path);
      printf("}\n");
    } else {
      printf("%s%-6ld %9.2f tok/s (median of %d; min %.2f, max %.2f)\n", kind, n_tok, median, runs, rates[0],
             rates[runs - 1]);
    }
    fflush(stdout);
  }
  free(rates);
  free(ids);
  free(logits);
  pyrt_model_free(model);
  return status;
}
