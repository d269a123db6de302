"""The comparison stage (`stage`): every trained run evaluated on the held-out test split with honest statistics
(`statistics`), each variant summed up over its seeds (`over_seeds`), the leaderboard and the champion's choice
(`leaderboard`) and their figures (`figures`). Imports the layers below it, up to `catdog.train`."""
