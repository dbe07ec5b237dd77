/*
 * The routing predictor: guesses ranked by calibrated probability and scored against what the
 * layer used (precision and recall counted exactly), per-rank hit rates learnt from the
 * tokens, per-token co-activation counts chained over two layers, and the hybrid's blend —
 * each against a hand count.
 */
#include "predictor/predictor.h"

#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static pred *make(pred_kind kind, int32_t n_layer, int32_t n_expert, int32_t k, int32_t lookahead,
                  int32_t width)
{
    char err[256];
    pred *p = NULL;
    pred_opts o = {.kind = kind,
                   .n_layer = n_layer,
                   .n_expert = n_expert,
                   .n_expert_used = k,
                   .lookahead = lookahead,
                   .width = width};
    ck_assert_msg(pred_create(&p, &o, err, sizeof err) == 0, "%s", err);
    return p;
}

START_TEST(pregate_guesses_are_ranked_calibrated_and_scored)
{
    pred *p = make(PRED_PREGATE, 3, 6, 2, 1, 0);
    ck_assert_int_eq(pred_width(p), 2); /* width 0 means top-k */
    /* token 0 prefers 4 then 1; token 1 prefers 1 then 5 */
    const float logits[2 * 6] = {0, 2, 0, 0, 3, 0, /**/ 0, 3, 0, 0, 0, 2};
    const int32_t here[2 * 2] = {0, 1, 0, 1}; /* layer 0's experts: pre-gating ignores them */
    int32_t ex[6];
    float pr[6];
    /* Before any evidence each rank is right half the time: expert 1, guessed by both tokens,
     * 1 - 0.5 * 0.5; the others 0.5 (4 before 5: lower index among equals). */
    ck_assert_int_eq(pred_predict(p, 0, 1, here, logits, 2, ex, pr), 3);
    ck_assert(ex[0] == 1 && ex[1] == 4 && ex[2] == 5);
    ck_assert_float_eq_tol(pr[0], 0.75f, 1e-6f);
    ck_assert_float_eq_tol(pr[1], 0.5f, 1e-6f);
    /* Layer 1 routes token 0 to {4, 2} and token 1 to {1, 3}: the batch used {1, 2, 3, 4}, of
     * which the guess {1, 4, 5} had 2.  Both rank-0 guesses were right, both rank-1 wrong. */
    const int32_t used[2 * 2] = {4, 2, 1, 3};
    pred_observe(p, 1, used, 2);
    pred_layer_stats st;
    pred_get_stats(p, 1, &st);
    ck_assert_uint_eq(st.steps, 1);
    ck_assert_uint_eq(st.guessed, 3);
    ck_assert_uint_eq(st.used, 4);
    ck_assert_uint_eq(st.correct, 2);
    ck_assert_double_eq_tol(pred_rank_hit_rate(p, 1, 0), 3.0 / 4.0, 1e-12);
    ck_assert_double_eq_tol(pred_rank_hit_rate(p, 1, 1), 1.0 / 4.0, 1e-12);
    /* The same guess now carries the calibrated probabilities. */
    ck_assert_int_eq(pred_predict(p, 0, 1, here, logits, 2, ex, pr), 3);
    ck_assert(ex[0] == 1 && ex[1] == 4 && ex[2] == 5);
    ck_assert_float_eq_tol(pr[0], 1.0f - 0.75f * 0.25f, 1e-6f);
    ck_assert_float_eq_tol(pr[1], 0.75f, 1e-6f);
    ck_assert_float_eq_tol(pr[2], 0.25f, 1e-6f);
    pred_observe(p, 1, used, 2);
    pred_observe(p, 1, used, 2); /* the guess was consumed: not scored twice */
    pred_observe(p, 2, used, 2); /* layer 2 had no guess: not scored */
    pred_get_stats(p, 1, &st);
    ck_assert_uint_eq(st.steps, 2);
    pred_get_stats(p, 2, &st);
    ck_assert_uint_eq(st.steps, 0);
    pred_get_depth_stats(p, 1, &st);
    ck_assert_uint_eq(st.steps, 2);
    ck_assert_uint_eq(st.correct, 4);
    /* No layer after the last; no router logits, no pre-gating guess. */
    ck_assert_int_eq(pred_predict(p, 2, 1, here, logits, 2, ex, pr), 0);
    ck_assert_int_eq(pred_predict(p, 0, 1, here, NULL, 2, ex, pr), 0);
    pred_get_stats(p, 9, &st); /* out of range: zeros */
    ck_assert_uint_eq(st.guessed, 0);
    pred_destroy(&p);
    ck_assert_ptr_null(p);

    pred_kind k;
    ck_assert_int_eq(pred_kind_parse("hybrid", &k), 0);
    ck_assert_int_eq(k, PRED_HYBRID);
    ck_assert_int_eq(pred_kind_parse("oracle", &k), -EINVAL);
    char err[256];
    pred_opts bad = {.kind = PRED_PREGATE, .n_layer = 2, .n_expert = 4, .n_expert_used = 2};
    bad.width = 5; /* wider than the layer */
    ck_assert_int_eq(pred_create(&p, &bad, err, sizeof err), -EINVAL);
    bad.width = 0;
    bad.lookahead = PRED_MAX_LOOKAHEAD + 1;
    ck_assert_int_eq(pred_create(&p, &bad, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "look-ahead"));
    bad.lookahead = 1;
    bad.kind = PRED_NONE;
    ck_assert_int_eq(pred_create(&p, &bad, err, sizeof err), -EINVAL);
}
END_TEST

START_TEST(affinity_counts_per_token_and_chain_two_layers)
{
    pred *p = make(PRED_AFFINITY, 3, 4, 1, 2, 1);
    int32_t ex[4];
    float pr[4];
    const int32_t e0[] = {0}, e1[] = {1}, e2[] = {2}, e3[] = {3};
    ck_assert_int_eq(pred_predict(p, 0, 1, e0, NULL, 1, ex, pr), 0); /* nothing learnt yet */
    /* Three tokens go 0 -> 2 -> 3, one goes 1 -> 3 -> 1. */
    for (int i = 0; i < 3; i++) {
        pred_observe(p, 0, e0, 1);
        pred_observe(p, 1, e2, 1);
        pred_observe(p, 2, e3, 1);
    }
    pred_observe(p, 0, e1, 1);
    pred_observe(p, 1, e3, 1);
    pred_observe(p, 2, e1, 1);
    ck_assert_int_eq(pred_predict(p, 0, 1, e0, NULL, 1, ex, pr), 1);
    ck_assert_int_eq(ex[0], 2);
    ck_assert_int_eq(pred_predict(p, 0, 2, e0, NULL, 1, ex, pr), 1); /* 0 -> 2 -> 3 */
    ck_assert_int_eq(ex[0], 3);
    ck_assert_int_eq(pred_predict(p, 0, 2, e1, NULL, 1, ex, pr), 1); /* 1 -> 3 -> 1 */
    ck_assert_int_eq(ex[0], 1);
    ck_assert_int_eq(pred_predict(p, 0, 1, e3, NULL, 1, ex, pr), 0); /* 3 never seen at layer 0 */
    /* Per token: a batch of a 0-token and a 1-token guesses 2 and 3, not their cross product. */
    const int32_t both[] = {0, 1};
    ck_assert_int_eq(pred_predict(p, 0, 1, both, NULL, 2, ex, pr), 2);
    ck_assert((ex[0] == 2 && ex[1] == 3) || (ex[0] == 3 && ex[1] == 2));
    /* A batch whose size differs from the one that learnt layer 0 teaches nothing across. */
    const int32_t pair[] = {3, 3};
    pred_observe(p, 0, e3, 1);
    pred_observe(p, 1, pair, 2);
    ck_assert_int_eq(pred_predict(p, 0, 1, e3, NULL, 1, ex, pr), 0);
    pred_destroy(&p);
}
END_TEST

START_TEST(hybrid_is_pregate_until_the_counts_know)
{
    pred *p = make(PRED_HYBRID, 2, 4, 1, 1, 1);
    const float logits[4] = {2.0f, 1.9f, 0.0f, 0.0f};
    const int32_t e2[] = {2}, e1[] = {1};
    int32_t ex[4];
    float pr[4];
    ck_assert_int_eq(pred_predict(p, 0, 1, e2, logits, 1, ex, pr), 1);
    ck_assert_int_eq(ex[0], 0); /* the router's favourite */
    for (int i = 0; i < 5; i++) {
        pred_observe(p, 0, e2, 1);
        pred_observe(p, 1, e1, 1);
    }
    /* Every token that used 2 went on to 1: half of that outweighs the router's small lead. */
    ck_assert_int_eq(pred_predict(p, 0, 1, e2, logits, 1, ex, pr), 1);
    ck_assert_int_eq(ex[0], 1);
    pred_destroy(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("predictor");
    TCase *tc = tcase_create("predictor");
    tcase_add_test(tc, pregate_guesses_are_ranked_calibrated_and_scored);
    tcase_add_test(tc, affinity_counts_per_token_and_chain_two_layers);
    tcase_add_test(tc, hybrid_is_pregate_until_the_counts_know);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
