"""migpt_traj.outputs"""
