/*
 * Scheduler tests on a real (tiny, seeded) model: continuous batching must give every greedy
 * request exactly the tokens and logits it gets alone, whatever else shares its steps and
 * however its prompt is chunked; requests end exactly once with the right reason; cancellation,
 * refusals and shutdown behave as the header says.
 */
#include "engine/scheduler.h"
#include "kernels/cpu/cpu.h"
#include "kernels/sim/sim.h"
#include "test_models.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_GEN = 64 };

typedef struct probe {
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
    int32_t n_vocab;
    int32_t tokens[MAX_GEN];
    int n_tokens;
    uint64_t logits_hash; /* FNV-1a over every logits row this request saw */
    int stop_after;       /* emit() returns true after this many tokens; 0: never */
    bool hold;            /* emit() waits while set: the request stays running */
    int n_done;
    scheduler_end why;
    char message[256];
} probe;

static int32_t probe_sample(void *user, const float *logits)
{
    probe *p = user;
    const unsigned char *bytes = (const unsigned char *)logits;
    uint64_t h = p->logits_hash ? p->logits_hash : 1469598103934665603ull;
    for (size_t i = 0; i < (size_t)p->n_vocab * sizeof(float); i++)
        h = (h ^ bytes[i]) * 1099511628211ull;
    p->logits_hash = h;
    return model_argmax(logits, p->n_vocab);
}

static bool probe_emit(void *user, int32_t token)
{
    probe *p = user;
    pthread_mutex_lock(p->lock);
    ck_assert_int_lt(p->n_tokens, MAX_GEN);
    p->tokens[p->n_tokens++] = token;
    bool stop = p->stop_after && p->n_tokens >= p->stop_after;
    pthread_cond_broadcast(p->cond);
    while (p->hold)
        pthread_cond_wait(p->cond, p->lock);
    pthread_mutex_unlock(p->lock);
    return stop;
}

static void probe_done(void *user, scheduler_end why, const char *message)
{
    probe *p = user;
    pthread_mutex_lock(p->lock);
    p->n_done++;
    p->why = why;
    snprintf(p->message, sizeof p->message, "%s", message ? message : "");
    pthread_cond_broadcast(p->cond);
    pthread_mutex_unlock(p->lock);
}

static const scheduler_seq_ops probe_ops = {probe_sample, probe_emit, probe_done, NULL};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

static void wait_done(probe *p)
{
    pthread_mutex_lock(&lock);
    while (p->n_done == 0)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
}

static void wait_tokens(probe *p, int n)
{
    pthread_mutex_lock(&lock);
    while (p->n_tokens < n && p->n_done == 0)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
}

typedef struct fixture {
    kern_backend *backend;
    model *m;
    int32_t n_vocab;
} fixture;

static void fixture_open_on(fixture *fx, const char *type, kern_backend_kind kind)
{
    char path[1024], name[128], args[256], err[512];
    snprintf(name, sizeof name, "qwen3moe-tiny-%s", type);
    snprintf(args, sizeof args, "--arch qwen3moe --preset tiny --type %s --seed 1", type);
    test_model_file(name, args, path, sizeof path);
    kern_open_opts o = kern_open_opts_default();
    o.kind = kind;
    o.n_threads = 2;
    ck_assert_msg(kern_open(&fx->backend, &o, err, sizeof err) == 0, "%s", err);
    model_opts mo = {.backend = fx->backend};
    ck_assert_msg(model_open(&fx->m, path, &mo, err, sizeof err) == 0, "%s", err);
    fx->n_vocab = model_params(fx->m)->n_vocab;
}

static void fixture_open(fixture *fx, const char *type)
{
    fixture_open_on(fx, type, KERN_BACKEND_CPU);
}

static void fixture_close(fixture *fx)
{
    model_close(&fx->m);
    kern_close(&fx->backend);
}

static void probe_init(probe *p, int32_t n_vocab)
{
    memset(p, 0, sizeof *p);
    p->lock = &lock;
    p->cond = &cond;
    p->n_vocab = n_vocab;
}

static scheduler *open_sched(fixture *fx, int max_running, int tokens_per_step, int chunk,
                             int max_waiting, int n_ctx)
{
    char err[512];
    scheduler *s = NULL;
    scheduler_opts o = {.max_running = max_running,
                        .max_tokens_per_step = tokens_per_step,
                        .prefill_chunk = chunk,
                        .max_waiting = max_waiting,
                        .n_ctx = n_ctx};
    ck_assert_msg(scheduler_open(&s, fx->m, &o, err, sizeof err) == 0, "%s", err);
    return s;
}

static void submit(scheduler *s, const int32_t *prompt, int n, int max_tokens, probe *p,
                   uint64_t *id)
{
    char err[512];
    ck_assert_msg(scheduler_submit(s, prompt, n, max_tokens, &probe_ops, p, id, err, sizeof err) ==
                      0,
                  "%s", err);
}

enum { N_REQ = 6, GEN = 12 };
static const int prompt_len[N_REQ] = {3, 40, 1, 17, 29, 8};

static void make_prompt(int r, int32_t *out, int32_t n_vocab)
{
    for (int i = 0; i < prompt_len[r]; i++)
        out[i] = (int32_t)((r * 131 + i * 37 + 5) % n_vocab);
}

/* Every request alone, then all together under tight step budgets and small prefill chunks: the
 * same tokens and bit-identical logits. */
static void check_invariance(const char *type, int max_running, int tokens_per_step, int chunk)
{
    fixture fx;
    fixture_open(&fx, type);
    int32_t prompts[N_REQ][64];
    for (int r = 0; r < N_REQ; r++)
        make_prompt(r, prompts[r], fx.n_vocab);

    probe alone[N_REQ], together[N_REQ];
    scheduler *s = open_sched(&fx, 1, 512, 512, N_REQ, 128);
    for (int r = 0; r < N_REQ; r++) {
        probe_init(&alone[r], fx.n_vocab);
        submit(s, prompts[r], prompt_len[r], GEN, &alone[r], NULL);
        wait_done(&alone[r]);
        ck_assert_int_eq(alone[r].why, SCHEDULER_LENGTH);
        ck_assert_int_eq(alone[r].n_tokens, GEN);
    }
    scheduler_close(&s);

    s = open_sched(&fx, max_running, tokens_per_step, chunk, N_REQ, 128);
    for (int r = 0; r < N_REQ; r++) {
        probe_init(&together[r], fx.n_vocab);
        submit(s, prompts[r], prompt_len[r], GEN, &together[r], NULL);
    }
    for (int r = 0; r < N_REQ; r++)
        wait_done(&together[r]);
    scheduler_stats st;
    scheduler_get_stats(s, &st);
    scheduler_close(&s);

    for (int r = 0; r < N_REQ; r++) {
        ck_assert_int_eq(together[r].n_done, 1);
        ck_assert_int_eq(together[r].why, SCHEDULER_LENGTH);
        ck_assert_int_eq(together[r].n_tokens, GEN);
        for (int i = 0; i < GEN; i++)
            ck_assert_msg(together[r].tokens[i] == alone[r].tokens[i],
                          "%s request %d token %d: %d batched, %d alone", type, r, i,
                          together[r].tokens[i], alone[r].tokens[i]);
        ck_assert_msg(together[r].logits_hash == alone[r].logits_hash,
                      "%s request %d: batched logits differ from the request alone", type, r);
    }
    int total_prompt = 0;
    for (int r = 0; r < N_REQ; r++)
        total_prompt += prompt_len[r];
    ck_assert_uint_eq(st.prompt_tokens, (uint64_t)total_prompt);
    ck_assert_uint_eq(st.decode_tokens, (uint64_t)N_REQ * (GEN - 1));
    /* Batching really happened: fewer steps than running the requests one after another. */
    ck_assert_uint_lt(st.steps, (uint64_t)N_REQ * GEN);
    fixture_close(&fx);
}

START_TEST(batch_invariance_f32)
{
    check_invariance("f32", 4, 8, 5);
}
END_TEST

START_TEST(batch_invariance_q4_k_m)
{
    check_invariance("q4_k_m", 3, 16, 7);
}
END_TEST

START_TEST(invariance_one_token_chunks)
{
    check_invariance("f32", 6, 6, 1);
}
END_TEST

/* Prefix reuse: requests that begin with tokens an earlier request computed attach its KV blocks
 * and get exactly the tokens and logits they get without reuse — a repeat, a shared beginning, a
 * chat's next turn (the prompt extended by the answer), and after the cached blocks were evicted
 * by a prompt that needed all the memory. */
/* With a budget of 2 unheld blocks, the blocks of the latest prompt stay and older ones go: A, B,
 * B again (its 2 blocks reused), A again (nothing left of it). */
START_TEST(prefix_budget_holds)
{
    fixture fx;
    fixture_open(&fx, "q4_k_m");
    enum { LEN = 40, G = 4 };
    int32_t a[LEN], b[LEN];
    for (int i = 0; i < LEN; i++) {
        a[i] = (int32_t)((i * 37 + 11) % fx.n_vocab);
        b[i] = (int32_t)((i * 53 + 5) % fx.n_vocab);
    }
    char err[512];
    scheduler_opts o = {.max_running = 1,
                        .max_tokens_per_step = 64,
                        .prefill_chunk = 64,
                        .max_waiting = 4,
                        .n_ctx = 128,
                        .prefix_cache = true,
                        .prefix_cache_blocks = 2};
    scheduler *s = NULL;
    ck_assert_msg(scheduler_open(&s, fx.m, &o, err, sizeof err) == 0, "%s", err);
    const int32_t *order[] = {a, b, b, a};
    for (int r = 0; r < 4; r++) {
        probe p;
        probe_init(&p, fx.n_vocab);
        submit(s, order[r], LEN, G, &p, NULL);
        wait_done(&p);
        ck_assert_int_eq(p.why, SCHEDULER_LENGTH);
        scheduler_stats st;
        scheduler_get_stats(s, &st);
        ck_assert_uint_le(st.prefix_cached_blocks, 2);
    }
    /* a last short request: by the time it ends, the engine has released A's blocks */
    probe p;
    probe_init(&p, fx.n_vocab);
    submit(s, a, 3, 1, &p, NULL);
    wait_done(&p);
    scheduler_stats st;
    scheduler_get_stats(s, &st);
    ck_assert_uint_le(st.prefix_cached_blocks, 2);
    ck_assert_uint_eq(st.prefix_hit_tokens, 32); /* only the repeated B, both its full blocks */
    ck_assert_uint_ge(st.prefix_evictions, 4);
    scheduler_close(&s);
    fixture_close(&fx);
}
END_TEST

START_TEST(prefix_reuse_is_exact)
{
    fixture fx;
    fixture_open(&fx, "q4_k_m");
    enum { NP = 6, LEN = 40, G = 12 };
    int32_t prompts[NP][128];
    int lens[NP];
    for (int i = 0; i < LEN; i++) {
        prompts[0][i] = (int32_t)((i * 37 + 11) % fx.n_vocab);
        prompts[2][i] = i < 20 ? prompts[0][i] : (int32_t)((i * 53 + 7) % fx.n_vocab);
    }
    memcpy(prompts[1], prompts[0], sizeof prompts[0]);
    lens[0] = lens[1] = lens[2] = LEN;
    for (int i = 0; i < 120; i++) /* all eight blocks of the cache */
        prompts[4][i] = (int32_t)((i * 71 + 3) % fx.n_vocab);
    lens[4] = 120;
    memcpy(prompts[5], prompts[0], sizeof prompts[0]);
    lens[5] = LEN;

    /* reference: no reuse; request 3 (the next turn) is built from request 0's answer */
    probe ref[NP], got[NP];
    char err[512];
    scheduler_opts o = {.max_running = 1,
                        .max_tokens_per_step = 64,
                        .prefill_chunk = 64,
                        .max_waiting = NP,
                        .n_ctx = 128,
                        .prefix_cache = false};
    for (int pass = 0; pass < 2; pass++) {
        probe *p = pass ? got : ref;
        o.prefix_cache = pass == 1;
        scheduler *s = NULL;
        ck_assert_msg(scheduler_open(&s, fx.m, &o, err, sizeof err) == 0, "%s", err);
        for (int r = 0; r < NP; r++) {
            if (r == 3) { /* request 0's prompt, its answer as fed back (all but the last), more */
                memcpy(prompts[3], prompts[0], LEN * sizeof(int32_t));
                memcpy(prompts[3] + LEN, p[0].tokens, (G - 1) * sizeof(int32_t));
                for (int i = 0; i < 5; i++)
                    prompts[3][LEN + G - 1 + i] = (int32_t)(i + 1);
                lens[3] = LEN + G - 1 + 5;
            }
            probe_init(&p[r], fx.n_vocab);
            submit(s, prompts[r], lens[r], r == 4 ? 4 : G, &p[r], NULL);
            wait_done(&p[r]);
            ck_assert_int_eq(p[r].why, SCHEDULER_LENGTH);
        }
        scheduler_stats st;
        scheduler_get_stats(s, &st);
        scheduler_close(&s);
        if (pass == 0) {
            ck_assert_int_eq(st.prefix_queries, 0);
            continue;
        }
        /* 0: nothing; 1: two blocks (the last prompt token is always computed); 2: one; 3: three
         * (the third holds request 0's answer); 4: none, and it evicts; 5: none left */
        ck_assert_int_eq(st.prefix_queries, NP);
        ck_assert_uint_eq(st.prefix_hit_tokens, 32 + 16 + 48);
        ck_assert_uint_gt(st.prefix_evictions, 0);
    }
    for (int r = 0; r < NP; r++) {
        ck_assert_int_eq(got[r].n_tokens, ref[r].n_tokens);
        for (int i = 0; i < got[r].n_tokens; i++)
            ck_assert_msg(got[r].tokens[i] == ref[r].tokens[i],
                          "request %d token %d: %d, %d without reuse", r, i, got[r].tokens[i],
                          ref[r].tokens[i]);
        ck_assert_msg(got[r].logits_hash == ref[r].logits_hash,
                      "request %d: logits differ from the run without reuse", r);
    }
    fixture_close(&fx);
}
END_TEST

START_TEST(stop_and_length)
{
    fixture fx;
    fixture_open(&fx, "f32");
    scheduler *s = open_sched(&fx, 2, 64, 16, 4, 64);
    int32_t prompt[4] = {1, 2, 3, 4};
    probe a, b;
    probe_init(&a, fx.n_vocab);
    probe_init(&b, fx.n_vocab);
    b.stop_after = 3;
    submit(s, prompt, 4, 5, &a, NULL);
    submit(s, prompt, 4, 50, &b, NULL);
    wait_done(&a);
    wait_done(&b);
    ck_assert_int_eq(a.why, SCHEDULER_LENGTH);
    ck_assert_int_eq(a.n_tokens, 5);
    ck_assert_int_eq(b.why, SCHEDULER_STOP);
    ck_assert_int_eq(b.n_tokens, 3);
    /* The slots are free again: a third request runs to completion. */
    probe c;
    probe_init(&c, fx.n_vocab);
    submit(s, prompt, 4, 2, &c, NULL);
    wait_done(&c);
    ck_assert_int_eq(c.n_tokens, 2);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(c.tokens[i], a.tokens[i]);
    scheduler_close(&s);
    ck_assert_int_eq(a.n_done + b.n_done + c.n_done, 3);
    fixture_close(&fx);
}
END_TEST

START_TEST(cancel_running_and_waiting)
{
    fixture fx;
    fixture_open(&fx, "f32");
    scheduler *s = open_sched(&fx, 1, 64, 16, 4, 128);
    int32_t prompt[3] = {7, 8, 9};
    probe run, queued;
    probe_init(&run, fx.n_vocab);
    probe_init(&queued, fx.n_vocab);
    uint64_t id_run = 0, id_queued = 0;
    submit(s, prompt, 3, 60, &run, &id_run);
    submit(s, prompt, 3, 60, &queued, &id_queued);
    ck_assert_uint_ne(id_run, id_queued);
    wait_tokens(&run, 2);
    scheduler_cancel(s, id_queued);
    scheduler_cancel(s, id_run);
    wait_done(&run);
    wait_done(&queued);
    ck_assert_int_eq(run.why, SCHEDULER_CANCELLED);
    ck_assert_int_lt(run.n_tokens, 60);
    ck_assert_int_eq(queued.why, SCHEDULER_CANCELLED);
    ck_assert_int_eq(queued.n_tokens, 0);
    scheduler_cancel(s, id_run); /* finished ids are ignored */
    scheduler_cancel(s, 12345);
    scheduler_stats st;
    scheduler_get_stats(s, &st);
    ck_assert_uint_eq(st.running, 0);
    ck_assert_uint_eq(st.waiting, 0);
    scheduler_close(&s);
    ck_assert_int_eq(run.n_done, 1);
    ck_assert_int_eq(queued.n_done, 1);
    fixture_close(&fx);
}
END_TEST

START_TEST(refusals)
{
    fixture fx;
    fixture_open(&fx, "f32");
    char err[512];
    scheduler *s = NULL;
    scheduler_opts bad = {.max_running = 4,
                          .max_tokens_per_step = 2,
                          .prefill_chunk = 1,
                          .max_waiting = 1,
                          .n_ctx = 32};
    ck_assert_int_eq(scheduler_open(&s, fx.m, &bad, err, sizeof err), -EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(err, "max_tokens_per_step"));

    s = open_sched(&fx, 1, 64, 16, 1, 32);
    ck_assert_int_eq(scheduler_n_ctx(s), 32);
    int32_t prompt[30] = {0};
    probe p;
    probe_init(&p, fx.n_vocab);
    ck_assert_int_eq(scheduler_submit(s, prompt, 30, 3, &probe_ops, &p, NULL, err, sizeof err),
                     -E2BIG);
    ck_assert_ptr_nonnull(strstr(err, "context length (32)"));
    int32_t bad_tok[2] = {1, fx.n_vocab};
    ck_assert_int_eq(scheduler_submit(s, bad_tok, 2, 3, &probe_ops, &p, NULL, err, sizeof err),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "outside the vocabulary"));
    ck_assert_int_eq(scheduler_submit(s, prompt, 0, 3, &probe_ops, &p, NULL, err, sizeof err),
                     -EINVAL);

    /* One running, one waiting: the third is refused while both are there. */
    probe a, b, c;
    probe_init(&a, fx.n_vocab);
    probe_init(&b, fx.n_vocab);
    probe_init(&c, fx.n_vocab);
    uint64_t ida, idb;
    a.hold = true; /* a tiny model decodes 25 tokens in a few ms: a must not finish first */
    submit(s, prompt, 2, 25, &a, &ida);
    wait_tokens(&a, 1);
    submit(s, prompt, 2, 25, &b, &idb);
    ck_assert_int_eq(scheduler_submit(s, prompt, 2, 3, &probe_ops, &c, NULL, err, sizeof err),
                     -EAGAIN);
    ck_assert_ptr_nonnull(strstr(err, "queue is full"));
    pthread_mutex_lock(&lock);
    a.hold = false;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    /* Shutdown ends both with a final callback. */
    scheduler_close(&s);
    ck_assert_int_eq(a.n_done, 1);
    ck_assert_int_eq(b.n_done, 1);
    ck_assert(a.why == SCHEDULER_CANCELLED || a.why == SCHEDULER_LENGTH);
    ck_assert_int_eq(b.why == SCHEDULER_CANCELLED || b.why == SCHEDULER_LENGTH, 1);
    ck_assert_int_eq(c.n_done, 0);
    ck_assert_int_eq(p.n_done, 0);
    fixture_close(&fx);
}
END_TEST

/* A step that fails (a kernel failure, injected on sim) ends exactly the requests in that step,
 * with the error; requests not in it go on, and the next ones run as if nothing had happened. */
START_TEST(a_failed_step_ends_its_requests_with_the_error)
{
    fixture fx;
    fixture_open_on(&fx, "f32", KERN_BACKEND_SIM);
    scheduler *s = open_sched(&fx, 1, 64, 16, 4, 64); /* one runs, the next waits */
    int32_t prompt[4] = {3, 1, 4, 1};
    probe ref, a, b, after;
    probe_init(&ref, fx.n_vocab);
    submit(s, prompt, 4, 6, &ref, NULL);
    wait_done(&ref);
    ck_assert_int_eq(ref.why, SCHEDULER_LENGTH);
    /* a decodes; the failure hits its next step */
    probe_init(&a, fx.n_vocab);
    submit(s, prompt, 4, 40, &a, NULL);
    wait_tokens(&a, 2);
    probe_init(&b, fx.n_vocab);
    submit(s, prompt, 4, 6, &b, NULL); /* waiting: not in the step that fails */
    ck_assert_int_eq(kern_sim_inject_failure(fx.backend, 5, -EIO), 0);
    wait_done(&a);
    ck_assert_int_eq(a.why, SCHEDULER_ERROR);
    ck_assert_msg(strstr(a.message, "injected") != NULL, "%s", a.message);
    ck_assert_int_lt(a.n_tokens, 40);
    /* the scheduler and the backend are usable again: the same request gives the same tokens */
    wait_done(&b);
    probe_init(&after, fx.n_vocab);
    submit(s, prompt, 4, 6, &after, NULL);
    wait_done(&after);
    ck_assert_int_eq(after.why, SCHEDULER_LENGTH);
    ck_assert_int_eq(after.n_tokens, 6);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(after.tokens[i], ref.tokens[i]);
    ck_assert_uint_eq(after.logits_hash, ref.logits_hash);
    wait_done(&b);
    ck_assert_int_eq(b.why, SCHEDULER_LENGTH);
    ck_assert_uint_eq(b.logits_hash, ref.logits_hash);
    scheduler_close(&s);
    ck_assert_int_eq(a.n_done, 1);
    fixture_close(&fx);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("sched");
    TCase *tc = tcase_create("sched");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, batch_invariance_f32);
    tcase_add_test(tc, batch_invariance_q4_k_m);
    tcase_add_test(tc, invariance_one_token_chunks);
    tcase_add_test(tc, prefix_reuse_is_exact);
    tcase_add_test(tc, prefix_budget_holds);
    tcase_add_test(tc, stop_and_length);
    tcase_add_test(tc, cancel_running_and_waiting);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, a_failed_step_ends_its_requests_with_the_error);
    suite_add_tcase(suite, tc);
    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
