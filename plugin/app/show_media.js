/*
 * fiftyone-anonymizer, the App-side half of "show the copies".
 *
 * An App that is already open keeps its grid's and modal's media field across dataset reloads
 * (only a newly opened dataset reads `app_config.grid_media_field`), so after "Anonymize"
 * the grid kept showing the originals and a video modal kept playing them until a page
 * reload. The Python operators trigger this operator after a run: it switches the open App's
 * media field (grid and modal) to the copies' field. Plain JavaScript over the globals the App
 * gives its plugins (window.__foo__ operators, window.__fos__ state, window.recoil): no build.
 */
(function () {
  "use strict";
  var PLUGIN = "@fiftyone-anonymizer/anonymize";
  var foo = window.__foo__;
  var fos = window.__fos__;
  var recoil = window.recoil;
  if (!foo || !fos || !recoil || !fos.selectedMediaField) {
    console.error(PLUGIN + ": the App does not expose its plugin globals; copies show after a reload");
    return;
  }

  class ShowMedia extends foo.Operator {
    get config() {
      return new foo.OperatorConfig({
        name: "show_media",
        label: "Anonymizer: show a media field",
        unlisted: true,
      });
    }

    useHooks() {
      return {
        setMedia: recoil.useRecoilCallback(function (api) {
          return function (field) {
            api.set(fos.selectedMediaField(false), field);
            api.set(fos.selectedMediaField(true), field);
          };
        }, []),
      };
    }

    async execute(ctx) {
      ctx.hooks.setMedia(ctx.params.field || "filepath");
    }
  }

  foo.registerOperator(ShowMedia, PLUGIN);
})();
